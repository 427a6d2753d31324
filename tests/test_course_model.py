"""The course model shipped in ``models/course/`` is what its files say: re-evaluated here on the regenerated
synthetic validation set, it reproduces its recorded mIoU and board-swap follow rate, so a broken loader, transform,
generator or model definition fails this test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from anncore.analysis.cue import board_swap
from anncore.data import CityscapesSegmentation, val_transforms
from anncore.data.synthetic import ensure_synthetic
from anncore.engine.evaluate import evaluate
from anncore.models.checkpoint import load_checkpoint
from anncore.models.loading import COURSE_MODEL, load_model

COURSE = COURSE_MODEL.parent
RECIPE = Path(__file__).resolve().parents[1] / "params" / "course_model.yaml"
# Same weights, same scenes: only the summation order of a different thread count can flip a few argmax pixels.
TOLERANCE = 0.003


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads((COURSE / "metrics.json").read_text())


def test_the_course_model_is_small_finite_and_trained_with_the_recipe_file(recorded: dict) -> None:
    assert COURSE_MODEL.stat().st_size <= 5 * 2**20
    state = load_checkpoint(COURSE_MODEL)
    assert set(state) >= {"model", "model_config", "config"} and "optimizer" not in state
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    recipe = yaml.safe_load(RECIPE.read_text())
    unshaping = ("out", "log_every")  # where a run writes and how often it logs do not change its weights
    differing = {
        k: (v, state["config"][k]) for k, v in recipe.items() if k not in unshaping and state["config"][k] != v
    }
    assert not differing, (
        f"params/course_model.yaml is no longer the recipe the course model was trained with: {differing}"
    )
    assert state["config"]["head"] == "ann" and recorded["iterations"] == recipe["iters"]


def test_the_course_model_reproduces_its_recorded_scores(recorded: dict, tmp_path: Path) -> None:
    config = load_checkpoint(COURSE_MODEL)["config"]
    (height, width), (_, val) = config["synthetic_size"], config["synthetic_scenes"]
    # validation frames do not depend on the number of training frames: write one training frame only
    root = ensure_synthetic(tmp_path / "set", train=1, val=val, height=height, width=width, seed=0)
    model = load_model("course")
    result = evaluate(model, CityscapesSegmentation(root, "val", transforms=val_transforms()))
    assert result.images == val
    assert result.metrics["miou"] == pytest.approx(recorded["final_miou"], abs=TOLERANCE)
    cue = json.loads((COURSE / "cue.json").read_text())
    swap = board_swap(model, scenes=cue["scenes"], size=(height, width), seed=cue["seed"])
    assert swap.follow_rate == pytest.approx(cue["follow_rate"], abs=TOLERANCE)
    assert swap.follow_rate >= 0.93, "the course model no longer reads the cue board"
