"""The papermill course runner: parameter checking and a smoke-sized run into runs/<timestamp>/."""

import json

import nbformat
import pytest

from anncore.course import declared_parameters, load_parameters, run_course, strip_run_metadata


def write_notebook(path, params_source="ITERS = 3\nLR = 0.01\nNAME = 'x'\nCROP = (8, 8)\nFLAG = False\nROOT = None"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(params_source)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(ITERS * 2, NAME)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_declared_parameters(tmp_path):
    nb = write_notebook(tmp_path / "00_a.ipynb")
    assert declared_parameters(nb) == {"ITERS": 3, "LR": 0.01, "NAME": "x", "CROP": (8, 8), "FLAG": False, "ROOT": None}


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("ITER: 5\n", "unknown parameter 'ITER'"),
        ("ITERS: '5'\n", "parameter 'ITERS' must be like the default 3"),
        ("FLAG: 1\n", "parameter 'FLAG'"),
        ("CROP: 8\n", "parameter 'CROP'"),
        ("- 1\n", "expected a YAML mapping"),
    ],
)
def test_bad_parameter_files_fail_at_once_naming_the_parameter(tmp_path, yaml_text, message):
    nb = write_notebook(tmp_path / "00_a.ipynb")
    (tmp_path / "00_a.yaml").write_text(yaml_text)
    with pytest.raises(ValueError, match=message):
        load_parameters(tmp_path / "00_a.yaml", nb)


def test_good_parameters_pass(tmp_path):
    nb = write_notebook(tmp_path / "00_a.ipynb")
    (tmp_path / "00_a.yaml").write_text("ITERS: 5\nLR: 1\nCROP: [4, 4]\nROOT: /data\n")
    assert load_parameters(tmp_path / "00_a.yaml", nb) == {"ITERS": 5, "LR": 1, "CROP": [4, 4], "ROOT": "/data"}
    assert load_parameters(tmp_path / "missing.yaml", nb) == {}


def test_run_course_executes_with_parameters(tmp_path):
    notebooks, params = tmp_path / "nb", tmp_path / "params"
    notebooks.mkdir(), params.mkdir()
    write_notebook(notebooks / "00_a.ipynb")
    (params / "00_a.yaml").write_text("ITERS: 21\n")
    rows = run_course(notebooks, params, tmp_path / "runs")
    assert [r["status"] for r in rows] == ["ok"]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())[0]["notebook"] == "00_a.ipynb"
    executed = nbformat.read(run_dir / "00_a.ipynb", as_version=4)
    assert "42 x" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    strip_run_metadata(run_dir / "00_a.ipynb")
    stripped = nbformat.read(run_dir / "00_a.ipynb", as_version=4)
    assert "papermill" not in stripped.metadata
    assert stripped.cells[0].metadata["tags"] == ["parameters"]


def test_summary_collects_a_notebooks_metrics(tmp_path):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    source = "OUT_DIR = 'out'\nMIOU = 0.5"
    nb = write_notebook(notebooks / "07_t.ipynb", source)
    book = nbformat.read(nb, as_version=4)
    book.cells[1] = nbformat.v4.new_code_cell(
        "import json, pathlib\npathlib.Path(OUT_DIR).mkdir(exist_ok=True)\n"
        "pathlib.Path(OUT_DIR, 'metrics.json').write_text(json.dumps({'final_miou': MIOU}))"
    )
    nbformat.write(book, nb)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "07_t.yaml").write_text("MIOU: 0.25\n")
    (row,) = run_course(notebooks, tmp_path / "params", tmp_path / "runs")
    assert row["status"] == "ok" and row["miou"] == 0.25
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "07_t_metrics.json").read_text()) == {"final_miou": 0.25}
