"""The full-size path as its users run it, at Cityscapes' real size: a Cityscapes-format set of 1024x2048 frames,
the official recipe file (``params/cityscapes_r101.yaml``) with the small backbone and a few iterations in place of
ResNet-101 and 60k, ``make cityscapes``' notebooks 07-08 through ``course --params`` (a copy of
``params/cityscapes/`` with only the sizes changed), ``torchrun`` with two processes and a resume, and the three
evaluation presets.

What the small backbone leaves out, ResNet-101's own cost, is what ``make rehearse-r101`` runs: these same tests with
``ANNCORE_FULL_SIZE_BACKBONE=resnet101`` (not in CI; the README gives its time on a 2-core CPU). With the small
backbone each step takes seconds to a minute there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from anncore.data.synthetic import write_synthetic_cityscapes
from anncore.engine.config import load_config

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "params" / "cityscapes_r101.yaml"
FULL = (1024, 2048)
#: The backbone in place of the recipe's ResNet-101: the small one in CI, ``resnet101`` for ``make rehearse-r101``.
BACKBONE = os.environ.get("ANNCORE_FULL_SIZE_BACKBONE", "small")
#: The recipe, shrunk to CI: that backbone without ImageNet weights, a few iterations of two crops, fp32.
SHRUNK = ["--backbone", BACKBONE, "--pretrained", "none", "--batch-size", "2", "--workers", "0", "--no-amp",
          "--val-every", "2", "--checkpoint-every", "1", "--log-every", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def full_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("full_size") / "cityscapes"
    write_synthetic_cityscapes(root, train=2, val=1, height=FULL[0], width=FULL[1], seed=0)
    return root


def _run(argv: list[str], data: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``argv`` with ``$CITYSCAPES_DATASET`` set to ``data`` (how ``make cityscapes`` finds the data), checked."""
    environment = {**os.environ, "CITYSCAPES_DATASET": str(data), "OMP_NUM_THREADS": "1", **env}
    limit = 600 if BACKBONE == "small" else 7200  # ResNet-101's multi-scale + flip takes minutes per frame on a CPU
    done = subprocess.run(argv, cwd=REPO, env=environment, capture_output=True, text=True, timeout=limit)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def ddp_run(full_set: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The official recipe under torchrun, two gloo processes: 2 iterations, then ``--resume`` to 3."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "anncore", "train"]
    flags = ["--config", str(RECIPE), *SHRUNK, "--out", str(out)]
    first = _run([*torchrun, *flags, "--iters", "2"], full_set)
    second = _run([*torchrun, *flags, "--iters", "3", "--resume"], full_set)
    return out, first.stdout + first.stderr, second.stdout + second.stderr


def test_torchrun_trains_the_official_recipe_at_full_size_and_resumes(ddp_run: tuple[Path, str, str], full_set):
    out, first, second = ddp_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["iterations"], metrics["resumed_from"]) == (2, 3, 2)
    assert metrics["data"]["root"] == str(full_set) and metrics["data"]["train_images"] == 2
    recipe = load_config(RECIPE)
    trained = metrics["config"]
    assert trained["crop"] == [769, 769] and trained["class_weights"] == recipe.class_weights  # the official file's
    assert trained["ohem_min_kept"] == recipe.ohem_min_kept and trained["aux_weight"] == recipe.aux_weight
    # every message once per job (rank 0), a progress line every log_every iterations when not on a terminal
    assert first.count("data: ") == 1 and [f"iteration {i}/2" in first for i in (1, 2)] == [True, True]
    assert second.count("resuming ") == 1 and second.count("--resume with changed settings (iters: 2 -> 3)") == 1
    assert "iteration 3/3" in second and "val mIoU" in second


@pytest.mark.parametrize(
    ("preset", "inference"),
    [
        ("whole", {"scales": [1.0], "flip": False, "crop": None, "stride": None}),
        ("slide769", {"scales": [1.0], "flip": False, "crop": [769, 769], "stride": [513, 513]}),
        ("official-test", {"scales": [0.75, 1.0, 1.25], "flip": True, "crop": [864, 864], "stride": [576, 576]}),
    ],
)
def test_each_evaluation_preset_scores_a_full_size_frame(ddp_run, full_set, tmp_path, preset, inference):
    out = tmp_path / preset
    done = _run([sys.executable, "-m", "anncore", "evaluate", "--checkpoint", str(ddp_run[0] / "checkpoint.pt"),
                 "--out", str(out), "--preset", preset, "--limit", "1", "--save-predictions"], full_set)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inference"] == inference and metrics["images"] == 1 and "(1 images)" in done.stdout
    (prediction,) = (out / "predictions").glob("*_pred.png")
    assert Image.open(prediction).size == (FULL[1], FULL[0])  # whole-frame label ids, as the benchmark server reads


def test_make_cityscapes_notebooks_run_at_full_size(full_set: Path, tmp_path: Path) -> None:
    """``course --params`` with a copy of ``params/cityscapes/``: only sizes, paths and the backbone changed."""
    params, run = tmp_path / "params", tmp_path / "cityscapes_run"
    params.mkdir()
    changes = {
        "07_train_cityscapes.yaml": {"RECIPE": str(RECIPE), "OUT_DIR": str(run), "ITERS": 2, "BATCH_SIZE": 2,
                                     "BACKBONE": BACKBONE, "PRETRAINED": "", "AMP": False, "VAL_EVERY": 2,
                                     "CHECKPOINT_EVERY": 1, "LOG_EVERY": 1, "WORKERS": 0},
        "08_evaluate_and_compare.yaml": {"CHECKPOINT": str(run / "checkpoint.pt"), "OUT_DIR": str(run / "evaluate"),
                                         "N_SHOWN": 1, "CUE_SCENES": 2},
    }  # fmt: skip
    for name, change in changes.items():
        original = yaml.safe_load((REPO / "params" / "cityscapes" / name).read_text())
        assert set(change) - {"CUE_SCENES"} <= set(original), f"{name} no longer has {set(change) - set(original)}"
        (params / name).write_text(yaml.safe_dump({**original, **change}))
    _run([sys.executable, "-m", "anncore", "course", "--params", str(params), "--only", "07", "08",
          "--out", str(tmp_path / "runs")], full_set)  # fmt: skip
    (summary,) = (tmp_path / "runs").glob("*/summary.json")
    rows = json.loads(summary.read_text())
    assert [(r["notebook"], r["status"]) for r in rows] == [
        ("07_train_cityscapes.ipynb", "ok"), ("08_evaluate_and_compare.ipynb", "ok")
    ]  # fmt: skip
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["iterations"] == 2 and trained["data"]["root"] == str(full_set)
    evaluated = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert evaluated["data"]["root"] == str(full_set) and evaluated["images"] == 1
