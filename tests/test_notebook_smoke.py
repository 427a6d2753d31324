"""The course notebooks 06-08 as `make course` and `make cityscapes` run them: their parameter files fit the
notebooks' parameters cells, and the training notebook runs under papermill with injected parameters.

(nbval re-executes every notebook with its defaults; this covers the papermill route with parameter files.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anncore.course.runner import load_parameters, run_course

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PARAM_FILES = sorted(REPO.glob("params/0[6-8]_*.yaml")) + sorted(REPO.glob("params/cityscapes/0[78]_*.yaml"))


def test_course_and_cityscapes_parameter_files_exist() -> None:
    names = {p.relative_to(REPO).as_posix() for p in PARAM_FILES}
    assert {
        "params/06_ann_network.yaml",
        "params/07_train_cityscapes.yaml",
        "params/08_evaluate_and_compare.yaml",
        "params/cityscapes/07_train_cityscapes.yaml",
        "params/cityscapes/08_evaluate_and_compare.yaml",
    } <= names


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_parameter_file_fits_its_notebook(path: Path) -> None:
    params = load_parameters(path, NOTEBOOKS / f"{path.stem}.ipynb")  # raises naming an unknown or mistyped name
    assert params


def test_training_notebook_runs_with_injected_parameters(tmp_path: Path) -> None:
    params = tmp_path / "params"
    params.mkdir()
    out = tmp_path / "train"
    (params / "07_train_cityscapes.yaml").write_text(f"OUT_DIR: {out}\nITERS: 1\nBATCH_SIZE: 2\n")
    rows = run_course(NOTEBOOKS, params, tmp_path / "runs", only=["07"])
    assert [(r["notebook"], r["status"]) for r in rows] == [("07_train_cityscapes.ipynb", "ok")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 1 and metrics["config"]["batch_size"] == 2
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "07_train_cityscapes.ipynb").is_file()
