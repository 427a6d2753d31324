"""The head ablation runner: one budget for every head, the document it writes, and the helpers around it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from anncore.ablation import (
    RUN_FILES,
    VEHICLES,
    ablation_frame,
    clear_run,
    course_data_root,
    is_synthetic,
    latest_ablation,
    per_class_frame,
    run_ablation,
    write_ablation,
)
from anncore.data import CLASS_NAMES
from anncore.data.synthetic import ensure_synthetic
from anncore.train import load_config


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "set", train=4, val=2, height=64, width=128)


@pytest.fixture(scope="module")
def document(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = load_config(
        data_root=str(tiny_root), backbone="small", iters=1, batch_size=2, crop=[64, 128], ohem_min_kept=100,
        photometric=False, workers=0, val_every=0, checkpoint_every=0, device="cpu", head="ann", out="ignored",
    )  # fmt: skip
    return run_ablation(base, tmp_path_factory.mktemp("ablation"), heads=("fcn", "apnb"))


def test_run_ablation_trains_every_head_with_one_budget(document: dict) -> None:
    assert [r["head"] for r in document["heads"]] == ["fcn", "apnb"]
    assert document["data"] == "synthetic" and document["device"] == "cpu"
    assert document["config"]["iters"] == 1 and "head" not in document["config"]
    fcn, apnb = document["heads"]
    assert fcn["context_block_params"] == 0 < apnb["context_block_params"]
    assert apnb["params"] - fcn["params"] == apnb["context_block_params"]
    for record in document["heads"]:
        assert set(record["iou_per_class"]) == set(CLASS_NAMES)
        assert record["vehicle_iou"] == {name: record["iou_per_class"][name] for name in VEHICLES}
        assert 0.0 <= record["miou"] <= 1.0 and record["inference_ms"] > 0 and record["inference_size"] == [64, 128]


def test_run_ablation_starts_each_head_fresh(tiny_root: Path, tmp_path: Path) -> None:
    base = load_config(
        data_root=str(tiny_root), backbone="small", iters=1, batch_size=2, crop=[64, 128], ohem_min_kept=100,
        photometric=False, workers=0, val_every=0, checkpoint_every=0, device="cpu",
    )  # fmt: skip
    (tmp_path / "fcn").mkdir()
    (tmp_path / "fcn" / "checkpoint.pt").write_text("stale")  # a previous run's file would make train() refuse
    document = run_ablation(base, tmp_path, heads=("fcn",))
    assert document["heads"][0]["head"] == "fcn"
    assert json.loads((tmp_path / "fcn" / "metrics.json").read_text())["resumed_from"] is None


def test_write_and_latest_ablation_pick_the_newest(document: dict, tmp_path: Path) -> None:
    older = {**document, "created": "20000101T000000Z"}
    newer = {**document, "created": "29990101T000000Z"}
    write_ablation(newer, tmp_path)
    path_old = write_ablation(older, tmp_path)
    assert path_old.name == "ablation-synthetic-cpu-20000101T000000Z.json"
    found = latest_ablation(tmp_path)
    assert found is not None and found[1]["created"] == "29990101T000000Z"
    assert latest_ablation(tmp_path / "empty") is None


def test_frames(document: dict) -> None:
    table = ablation_frame(document)
    assert list(table.index) == ["fcn", "apnb"]
    row = document["heads"][1]
    values = [v for v in row["vehicle_iou"].values() if v is not None and not math.isnan(v)]
    expected = sum(values) / len(values) if values else math.nan
    assert table.loc["apnb", "vehicle mIoU"] == pytest.approx(expected, nan_ok=True)
    classes = per_class_frame(document)
    assert list(classes.index) == list(CLASS_NAMES) and list(classes.columns) == ["fcn", "apnb"]


def test_clear_run_deletes_only_run_files(tmp_path: Path) -> None:
    for name in (*RUN_FILES, "notes.txt"):
        (tmp_path / name).write_text("x")
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    clear_run(tmp_path / "missing")  # nothing to delete is fine


def test_course_data_root_precedence(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "real"))
    assert course_data_root("given", tmp_path, (64, 128)) == Path("given")
    assert course_data_root("", tmp_path, (64, 128)) == tmp_path / "real"
    monkeypatch.delenv("CITYSCAPES_DATASET")
    assert is_synthetic(tiny_root) and not is_synthetic(tmp_path)
