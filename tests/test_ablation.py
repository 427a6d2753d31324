"""The head ablation runner: every head and seed under one configuration, scored runs, the per-head summary, the
document it writes, and the helpers around it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from anncore.analysis.ablation import (
    SUMMARISED,
    ablation_frame,
    ablation_runs,
    latest_ablation,
    per_class_frame,
    run_ablation,
    runs_frame,
    vehicle_confusion_frame,
    write_ablation,
)
from anncore.analysis.cue import VEHICLES
from anncore.data import CLASS_NAMES
from anncore.data.synthetic import ensure_synthetic
from anncore.engine.config import load_config
from anncore.errors import OutputInUse


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "set", train=4, val=2, height=64, width=128)


def tiny_config(root: Path, **overrides: object):
    return load_config(
        data_root=str(root), backbone="small", iters=1, batch_size=2, crop=[64, 128], ohem_min_kept=100,
        photometric=False, workers=0, val_every=0, checkpoint_every=0, device="cpu", out="ignored", **overrides,
    )  # fmt: skip


@pytest.fixture(scope="module")
def document(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_ablation(tiny_config(tiny_root), tmp_path_factory.mktemp("ablation"), heads=("fcn", "ann"), seeds=(0, 1))


def test_run_ablation_trains_every_head_for_every_seed(document: dict) -> None:
    assert [(r["head"], r["seed"]) for r in document["runs"]] == [("fcn", 0), ("ann", 0), ("fcn", 1), ("ann", 1)]
    assert document["data"] == "synthetic" and document["device"] == "cpu" and document["seeds"] == [0, 1]
    assert document["config"]["iters"] == 1 and "head" not in document["config"] and "seed" not in document["config"]
    for record in document["runs"]:
        assert set(record["iou_per_class"]) == set(CLASS_NAMES)
        assert all(record[f"iou_{name}"] == record["iou_per_class"][name] for name in VEHICLES)
        assert 0.0 <= record["miou"] <= 1.0 and record["inference_ms"] > 0 and record["inference_size"] == [64, 128]
        assert 0.0 <= record["follow_rate"] <= 1.0 and record["cue"]["scenes"] == 2


def test_context_block_params_count_afnb_and_apnb(document: dict) -> None:
    fcn, ann = document["runs"][:2]
    assert fcn["context_block_params"] == 0
    assert ann["params"] - fcn["params"] == ann["context_block_params"]  # ann = fcn + AFNB + APNB


def test_summary_is_mean_and_sd_over_seeds(document: dict) -> None:
    for head in ("fcn", "ann"):
        mine = [r for r in document["runs"] if r["head"] == head]
        for key in SUMMARISED:
            entry, values = document["summary"][head][key], [r[key] for r in mine if r[key] is not None]
            assert entry["values"] == values  # absent classes (IoU null) are left out, as in mIoU
            assert entry["mean"] == (pytest.approx(statistics.fmean(values)) if values else None)
            assert entry["sd"] == (pytest.approx(statistics.stdev(values)) if len(values) > 1 else None)
    table = ablation_frame(document)
    assert list(table.index) == ["fcn", "ann"] and (table["seeds"] == 2).all()
    assert runs_frame(document).shape[0] == 4
    assert list(per_class_frame(document).index) == list(CLASS_NAMES)
    confusion = vehicle_confusion_frame(document, "ann")
    assert list(confusion.index) == list(VEHICLES) and confusion.sum(axis=1).round(9).eq(1).all()


def test_parallel_jobs_train_in_subprocesses(tiny_root: Path, tmp_path: Path) -> None:
    document = run_ablation(tiny_config(tiny_root), tmp_path, heads=("fcn",), seeds=(0, 1), jobs=2)
    assert document["machine"]["jobs"] == 2 and len(document["runs"]) == 2
    assert all((tmp_path / "fcn" / f"seed{s}" / "metrics.json").is_file() for s in (0, 1))


def test_run_ablation_never_replaces_earlier_runs_unless_told(tiny_root: Path, tmp_path: Path) -> None:
    """An earlier ablation's runs (hours of training) are refused, not deleted; --overwrite replaces them, and
    each run then starts fresh (not resumed from the earlier checkpoint)."""
    first = run_ablation(tiny_config(tiny_root), tmp_path, heads=("fcn",))
    write_ablation(first, tmp_path)
    with pytest.raises(OutputInUse, match="already holds ablation-synthetic-cpu-.*--overwrite"):
        run_ablation(tiny_config(tiny_root), tmp_path, heads=("fcn",))
    document = run_ablation(tiny_config(tiny_root), tmp_path, heads=("fcn",), overwrite=True)
    assert document["runs"][0]["head"] == "fcn" and not list(tmp_path.glob("ablation-*.json"))
    assert json.loads((tmp_path / "fcn" / "seed0" / "metrics.json").read_text())["resumed_from"] is None


def test_run_ablation_rejects_bad_arguments(tiny_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jobs"):
        run_ablation(tiny_config(tiny_root), tmp_path, jobs=0)
    with pytest.raises(ValueError, match="seeds"):
        run_ablation(tiny_config(tiny_root), tmp_path, seeds=())


def test_write_and_latest_ablation_pick_the_newest(document: dict, tmp_path: Path) -> None:
    older = {**document, "created": "20000101T000000Z"}
    newer = {**document, "created": "29990101T000000Z"}
    write_ablation(newer, tmp_path)
    path_old = write_ablation(older, tmp_path)
    assert path_old.name == "ablation-synthetic-cpu-20000101T000000Z.json"
    json.loads(path_old.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    found = latest_ablation(tmp_path)
    assert found is not None and found[1]["created"] == "29990101T000000Z"
    assert latest_ablation(tmp_path / "empty") is None


def test_latest_ablation_keeps_cue_variants_apart(tmp_path: Path) -> None:
    """An ablation on another cue variant (params/afnb_variant.yaml), however new, is not the course's ablation."""
    base = {"kind": "ablation", "data": "synthetic", "device": "cpu", "runs": [], "config": {}}
    write_ablation({**base, "created": "20000101T000000Z"}, tmp_path)  # written before synthetic_cue existed
    variant = {**base, "created": "29990101T000000Z", "config": {"synthetic_cue": "stripes"}}
    write_ablation(variant, tmp_path)
    default = latest_ablation(tmp_path)
    assert default is not None and default[1]["created"] == "20000101T000000Z"
    stripes = latest_ablation(tmp_path, synthetic_cue="stripes")
    assert stripes is not None and stripes[1]["created"] == "29990101T000000Z"


def test_ablation_runs_read_an_experiment_of_several_documents_as_one_table(tmp_path: Path) -> None:
    """Runs of other heads and budgets, written by separate commands, in one (iters, head, seed) table; the newer
    document's run where two hold the same one; other cue variants left out."""

    def run(head: str, seed: int, follow: float) -> dict:
        return {"head": head, "seed": seed, "follow_rate": follow, **{k: 0.0 for k in SUMMARISED if k != "follow_rate"}}

    def doc(created: str, iters: int, runs: list[dict], cue: str = "stripes") -> dict:
        config = {"iters": iters, "synthetic_cue": cue}
        return {"kind": "ablation", "data": "synthetic", "device": "cpu", "created": created, "config": config,
                "runs": runs}  # fmt: skip

    write_ablation(doc("20260101T000000Z", 500, [run("apnb", 0, 0.30), run("ann", 0, 0.70)]), tmp_path)
    write_ablation(doc("20260102T000000Z", 500, [run("fcn", 0, 0.33), run("ann", 0, 0.90)]), tmp_path)  # a rerun
    write_ablation(doc("20260103T000000Z", 1000, [run("apnb", 0, 0.95)]), tmp_path)
    write_ablation(doc("20260104T000000Z", 500, [run("apnb", 0, 0.99)], cue="boards"), tmp_path)
    runs = ablation_runs(tmp_path, "stripes")
    assert runs["follow_rate"].to_dict() == {
        (500, "ann", 0): 0.90, (500, "apnb", 0): 0.30, (500, "fcn", 0): 0.33, (1000, "apnb", 0): 0.95
    }  # fmt: skip
    assert ablation_runs(tmp_path, "other").empty and list(ablation_runs(tmp_path, "other").index.names) == [
        "iters", "head", "seed"
    ]  # fmt: skip
