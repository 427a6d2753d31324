"""The official Cityscapes evaluator as its users run it: the installed ``csEvalPixelLevelSemanticLabeling`` command,
in a subprocess, with ``CITYSCAPES_DATASET`` and ``CITYSCAPES_RESULTS`` pointing at a Cityscapes-format set and at
``evaluate --save-predictions``' folder, its instance score on, as published. It must agree with ``metrics.json``.

cityscapesscripts 2.3.0 (its latest release) calls ``np.in1d``, which numpy 2.4 removed: in such an environment the
command dies with ``AttributeError`` unless something fixes it (numpy below 2.4, or a release of cityscapesscripts
that calls ``np.isin``). The first test then skips, naming the cause; the second runs the same command with
``np.in1d`` put back the way numpy 2.3 defines it, which proves that the rest of the path (the instance score
included) works on the folder and is what a numpy bound gives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from anncore.__main__ import main
from anncore.data import CLASS_NAMES
from anncore.data.synthetic import write_synthetic_cityscapes

COMMAND = "csEvalPixelLevelSemanticLabeling"
# numpy 2.3's np.in1d (ravelled np.isin), for the interpreter the command starts: sitecustomize runs at its start-up
RESTORE_IN1D = """import numpy
if not hasattr(numpy, "in1d"):
    numpy.in1d = lambda ar1, ar2, assume_unique=False, invert=False, *, kind=None: numpy.isin(
        numpy.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert, kind=kind)
"""


def installed_command() -> Path:
    """The console script pip installed next to this interpreter (the venv's ``bin/``), else the one on ``PATH``."""
    beside = Path(sys.executable).parent / COMMAND
    found = beside if beside.is_file() else shutil.which(COMMAND)
    if found is None:
        pytest.skip(f"{COMMAND} is not installed (cityscapesscripts, in the dev extra)")
    return Path(found)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, small_model_file: Callable[..., Path]) -> tuple[Path, Path]:
    """(a Cityscapes-format set of 3 val frames, ``evaluate --save-predictions``' output folder for it)."""
    root = tmp_path_factory.mktemp("cs")
    write_synthetic_cityscapes(root, train=1, val=3, height=64, width=128, seed=3)
    out = tmp_path_factory.mktemp("eval")
    argv = ["evaluate", "--checkpoint", str(small_model_file("apnb")), "--data-root", str(root), "--out", str(out)]
    assert main([*argv, "--save-predictions", "--device", "cpu"]) == 0
    return root, out


def run_official(dataset: Path, results: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The published command line: the two variables set, no arguments (it globs the ground truth and walks
    ``$CITYSCAPES_RESULTS`` for each frame's prediction), the result in ``$CITYSCAPES_DATASET/evaluationResults/``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CITYSCAPES_")}
    env |= {"CITYSCAPES_DATASET": str(dataset), "CITYSCAPES_RESULTS": str(results)}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [str(installed_command())], env=env, cwd=dataset, capture_output=True, text=True, timeout=300, check=False
    )


def assert_agrees(dataset: Path, out: Path, result: subprocess.CompletedProcess[str]) -> None:
    """The command succeeded, scored every frame with its instance score, and its mIoU is ``metrics.json``'s."""
    assert result.returncode == 0, result.stderr[-3000:]
    official = json.loads((dataset / "evaluationResults" / "resultPixelLevelSemanticLabeling.json").read_text())
    ours = json.loads((out / "metrics.json").read_text())
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)
    assert np.isfinite(official["averageScoreInstClasses"])  # the instance score ran (nan when switched off)
    for name, iou in zip(CLASS_NAMES, ours["iou"], strict=True):  # metrics.json writes an absent class's nan as null
        expected = official["classScores"][name]
        assert (iou is None and np.isnan(expected)) or iou == pytest.approx(expected, abs=1e-9), name


def test_the_installed_official_command_scores_evaluate_predictions(evaluated: tuple[Path, Path]) -> None:
    """As published. Skips only while the environment has no fix: numpy without ``in1d`` and the command dying on
    it; any other failure, or a wrong score, fails."""
    dataset, out = evaluated
    result = run_official(dataset, out / "predictions")
    if result.returncode != 0 and not hasattr(np, "in1d") and "has no attribute 'in1d'" in result.stderr:
        pytest.skip(
            f"{COMMAND} (cityscapesscripts' latest release) calls np.in1d, removed in numpy 2.4; numpy "
            f"{np.__version__} is installed: the fix is numpy<2.4 in pyproject.toml and environment.yml"
        )
    assert_agrees(dataset, out, result)


def test_the_installed_official_command_with_numpy_2_3s_in1d(evaluated: tuple[Path, Path], tmp_path: Path) -> None:
    """The same command with ``np.in1d`` defined as numpy 2.3 does (a no-op where numpy has it): what the numpy<2.4
    bound gives, proven in any environment, the instance score included."""
    dataset, out = evaluated
    (tmp_path / "sitecustomize.py").write_text(RESTORE_IN1D)
    assert_agrees(dataset, out, run_official(dataset, out / "predictions", pythonpath=tmp_path))
