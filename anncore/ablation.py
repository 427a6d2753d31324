"""The head ablation of the course (notebook 08): ``fcn``, ``nl``, ``apnb`` and ``ann`` trained with one budget and
one seed through :func:`anncore.train.train`, collected into one JSON document.

Only the head differs between the runs (:mod:`anncore.model`), so differences in mIoU and in the vehicle classes,
which the synthetic set decides by a distant cue board (:mod:`anncore.data.synthetic`), are the context blocks'.
Documents are written as ``benchmarks/results/ablation-<data>-<device>-<timestamp>.json`` and read back with
:func:`latest_ablation`.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from anncore.backbone import UntrainedBackboneWarning
from anncore.data import CLASS_NAMES
from anncore.data.synthetic import MANIFEST, resolve_data_root
from anncore.env import pick_device
from anncore.train import TrainConfig, build_model, train

#: The heads in the order of the comparison: no context, full non-local, pyramid non-local, the full network.
ABLATION_HEADS: tuple[str, ...] = ("fcn", "nl", "apnb", "ann")
#: Classes the synthetic set decides only through the distant cue board.
VEHICLES: tuple[str, ...] = ("car", "truck", "bus")
#: Files :func:`anncore.train.train` writes into its ``out`` folder.
RUN_FILES: tuple[str, ...] = ("checkpoint.pt", "log.jsonl", "metrics.json", "config.yaml")


def clear_run(out: str | Path) -> None:
    """Delete the files a previous training run wrote into ``out`` (nothing else), so a new run starts fresh."""
    for name in RUN_FILES:
        (Path(out) / name).unlink(missing_ok=True)


def course_data_root(data_root: str | Path, synthetic_root: Path, size: Sequence[int], seed: int = 0) -> Path:
    """``data_root`` when given, else ``$CITYSCAPES_DATASET`` when set, else the synthetic set of ``size`` (H, W)
    under ``synthetic_root`` (40 train / 10 val frames, written on first use by :func:`ensure_synthetic`)."""
    height, width = size
    return resolve_data_root(str(data_root), synthetic_root, height=height, width=width, seed=seed)


def is_synthetic(root: Path) -> bool:
    """Whether ``root`` holds the generated synthetic set (its manifest) rather than real Cityscapes."""
    return (Path(root) / MANIFEST).is_file()


@torch.no_grad()
def inference_ms(model: torch.nn.Module, size: Sequence[int], device: torch.device, repeats: int = 10) -> float:
    """Wall time in ms of one eval-mode forward pass on a ``(1, 3, H, W)`` input: the fastest of ``repeats`` after
    one warm-up (the minimum, as :mod:`timeit` advises, since on a shared machine other jobs only add time)."""
    model.eval().to(device)
    x = torch.randn(1, 3, *size, device=device)
    model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def head_record(config: TrainConfig, metrics: dict[str, Any], size: Sequence[int]) -> dict[str, Any]:
    """One row of the ablation: scores from ``metrics`` (:func:`train`'s return value), parameters and cost."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBackboneWarning)
        model = build_model(replace(config, pretrained=None))
    block = model.head.context_block
    device = pick_device(config.device)
    return {
        "head": config.head,
        "miou": metrics["final_miou"],
        "pixel_acc": metrics["pixel_acc"],
        "iou_per_class": metrics["iou_per_class"],
        "vehicle_iou": {name: metrics["iou_per_class"][name] for name in VEHICLES},
        "params": sum(p.numel() for p in model.parameters()),
        "head_params": sum(p.numel() for p in model.head.parameters()),
        "context_block_params": 0 if block is None else sum(p.numel() for p in block.parameters()),
        "train_time_s": metrics["wall_time_s"],
        "images_per_s": metrics["images_per_s"],
        "inference_ms": inference_ms(model, size, device),
        "inference_size": list(size),
    }


def run_ablation(
    base: TrainConfig, out_dir: str | Path, heads: Sequence[str] = ABLATION_HEADS, size: Sequence[int] | None = None
) -> dict[str, Any]:
    """Train every head in ``heads`` with ``base`` (same iterations, batch, crop and seed), each from scratch into
    ``out_dir/<head>``, and return the ablation document (:func:`write_ablation` stores it).

    ``size`` is the ``(H, W)`` of the inference timing (default: the training crop).
    """
    size = tuple(size or base.crop)
    started = time.perf_counter()
    records = []
    for head in heads:
        config = replace(base, head=head, out=str(Path(out_dir) / head), resume=False)
        clear_run(config.out)
        records.append(head_record(config, train(config), size))
    device = pick_device(base.device)
    return {
        "kind": "ablation",
        "created": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "data": "synthetic" if is_synthetic(Path(base.data_root)) else "cityscapes",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": {k: v for k, v in vars(base).items() if k not in ("head", "out", "resume")},
        "wall_time_s": time.perf_counter() - started,
        "heads": records,
    }


def write_ablation(document: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``document`` as ``out_dir/ablation-<data>-<cpu|cuda|mps>-<created>.json`` and return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = document["device"].split(":")[0]
    path = out / f"ablation-{document['data']}-{device}-{document['created']}.json"
    path.write_text(json.dumps(document, indent=2, default=list))
    return path


def latest_ablation(folder: str | Path, pattern: str = "ablation-synthetic-*.json") -> tuple[Path, dict] | None:
    """The newest document matching ``pattern`` in ``folder`` (by its ``created`` stamp), or ``None``."""
    found = [(json.loads(p.read_text()), p) for p in Path(folder).glob(pattern)]
    if not found:
        return None
    document, path = max(found, key=lambda item: item[0]["created"])
    return path, document


def ablation_frame(document: dict[str, Any]) -> pd.DataFrame:
    """One row per head: mIoU, the vehicle classes' IoU (and their mean), parameters and cost."""
    rows = []
    for record in document["heads"]:
        vehicles = record["vehicle_iou"]
        finite = [v for v in vehicles.values() if v is not None and v == v]
        rows.append(
            {
                "head": record["head"],
                "mIoU": record["miou"],
                **{f"IoU {name}": vehicles[name] for name in VEHICLES},
                "vehicle mIoU": sum(finite) / len(finite) if finite else float("nan"),
                "params (M)": record["params"] / 1e6,
                "context block params": record["context_block_params"],
                "train img/s": record["images_per_s"],
                "inference ms": record["inference_ms"],
            }
        )
    return pd.DataFrame(rows).set_index("head")


def per_class_frame(document: dict[str, Any]) -> pd.DataFrame:
    """Per-class IoU, one column per head, one row per Cityscapes class."""
    return pd.DataFrame(
        {r["head"]: [r["iou_per_class"][name] for name in CLASS_NAMES] for r in document["heads"]}, index=CLASS_NAMES
    )
