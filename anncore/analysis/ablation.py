"""The head ablation (notebook 08, ``python -m anncore ablate``): ``fcn``, ``nl``, ``apnb`` and ``ann`` trained under
one configuration for several seeds, each run scored by mIoU, the vehicle classes' IoU and the board-swap test
(:mod:`anncore.analysis.cue`), collected into one JSON document with the mean and spread per head.

Only the head differs between the runs (:mod:`anncore.models.network`), so differences in the vehicle classes, which the
synthetic set decides by a distant cue board (:mod:`anncore.data.synthetic`), are the context blocks'. In the paper's
terms (ablation study, Table 1): ``ann - apnb`` is what AFNB adds, ``nl - apnb`` the price of pyramid sampling.

Runs go one after another in this process (``jobs=1``) or ``jobs`` at a time as ``python -m anncore train``
subprocesses with ``cpu_count // jobs`` threads each. Inference latency is measured afterwards, one model at a
time, after warm-up (:func:`anncore.analysis.cost.time_step`, median). Documents are written as
``OUT/ablation-<data>-<device>-<timestamp>.json`` and read back with :func:`latest_ablation`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from torch import nn

from anncore.analysis.cost import time_step
from anncore.analysis.cue import VEHICLES, board_swap, val_scenes
from anncore.data import CLASS_NAMES
from anncore.data.root import is_synthetic
from anncore.device import pick_device
from anncore.engine.config import TrainConfig, data_root_of, plain_config
from anncore.engine.runlog import RUN_FILES
from anncore.engine.train import train
from anncore.errors import BadInput
from anncore.files import utc_stamp, write_json
from anncore.models.backbone import UntrainedBackboneWarning
from anncore.models.loading import load_model
from anncore.models.network import ANN
from anncore.outputs import LOCK_NAME, fresh_output
from anncore.progress import Progress

#: The heads in the order of the comparison: no context, full non-local, pyramid non-local, the full network.
ABLATION_HEADS: tuple[str, ...] = ("fcn", "nl", "apnb", "ann")
#: Files :func:`anncore.engine.train.train` writes into its ``out`` folder.
#: Per-run numbers summarised per head as mean and sample standard deviation.
SUMMARISED: tuple[str, ...] = (
    "miou",
    *(f"iou_{name}" for name in VEHICLES),
    "follow_rate",
    "images_per_s",
    "train_time_s",
    "inference_ms",
)


def context_block_params(model: ANN) -> int:
    """Parameters of the head's context blocks: AFNB and APNB for ``ann``, one block for ``nl`` / ``apnb``."""
    return sum(p.numel() for block in model.head.blocks().values() for p in block.parameters())


@torch.no_grad()
def inference_ms(
    model: nn.Module, size: Sequence[int], device: torch.device, warmup: int = 3, repeats: int = 10
) -> float:
    """Median wall time in ms of one eval-mode forward pass on a ``(1, 3, H, W)`` input, after ``warmup`` calls."""
    model.eval().to(device)
    x = torch.randn(1, 3, *size, device=device)
    for _ in range(warmup):
        model(x)
    return statistics.median(time_step(lambda: model(x), device, repeats))


def run_record(config: TrainConfig, size: Sequence[int], device: torch.device) -> dict[str, Any]:
    """One run of the ablation, scored from its folder ``config.out``: mIoU, vehicle IoU, the board-swap test on
    the synthetic set, parameters and cost."""
    out = Path(config.out)
    metrics = json.loads((out / "metrics.json").read_text())
    model = load_model(out / "checkpoint.pt", map_location=device)
    iou = metrics["iou_per_class"]
    record: dict[str, Any] = {
        "head": config.head,
        "seed": config.seed,
        "miou": metrics["final_miou"],
        "pixel_acc": metrics["pixel_acc"],
        "iou_per_class": iou,
        **{f"iou_{name}": iou[name] for name in VEHICLES},
        "params": sum(p.numel() for p in model.parameters()),
        "head_params": sum(p.numel() for p in model.head.parameters()),
        "context_block_params": context_block_params(model),
        "train_time_s": metrics["wall_time_s"],
        "images_per_s": metrics["images_per_s"],
        "inference_ms": inference_ms(model, size, device),
        "inference_size": list(size),
        "out": str(out),
    }
    scenes = val_scenes(data_root_of(config))
    if scenes is not None:
        swap = board_swap(model, device=device, **scenes)
        record.update(follow_rate=swap.follow_rate, cue=swap.as_dict())
    return record


def summarise(runs: Sequence[dict[str, Any]], heads: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per head: ``{key: {"mean", "sd", "values"}}`` for :data:`SUMMARISED` (sd over seeds, ``None`` for one run)
    and the parameter counts, which do not depend on the seed."""
    summary: dict[str, dict[str, Any]] = {}
    for head in heads:
        mine = [r for r in runs if r["head"] == head]
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in mine]}
        for key in SUMMARISED:
            values = [r[key] for r in mine if r.get(key) is not None]
            entry[key] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "values": values,
            }
        for key in ("params", "head_params", "context_block_params"):
            entry[key] = mine[0][key]
        summary[head] = entry
    return summary


def _train_subprocess(config: TrainConfig, threads: int) -> None:
    """``python -m anncore train --config OUT/ablation-config.yaml`` with ``threads`` CPU threads; raises with the
    run's last output lines if it fails."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "ablation-config.yaml"
    recipe.write_text(yaml.safe_dump(plain_config(config), sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-m", "anncore", "train", "--config", str(recipe)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-5:])
        raise RuntimeError(f"training {config.head} seed {config.seed} into {out} failed:\n{tail}")


#: What an ablation writes into its ``--out``: every run's files and the document (``--overwrite`` replaces them).
ABLATION_FILES: tuple[str, ...] = (
    *(f"*/seed*/{name}" for name in RUN_FILES),
    f"*/seed*/{LOCK_NAME}",  # left by a run killed mid-way
    "ablation-*.json",
)


def run_ablation(
    base: TrainConfig,
    out_dir: str | Path,
    heads: Sequence[str] = ABLATION_HEADS,
    seeds: Sequence[int] = (0,),
    size: Sequence[int] | None = None,
    jobs: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every head in ``heads`` for every seed in ``seeds`` with ``base`` (same data, recipe and budget), each
    from scratch into ``out_dir/<head>/seed<s>``, score the runs, and return the ablation document
    (:func:`write_ablation` stores it).

    ``out_dir`` is a folder of its own (:func:`~anncore.outputs.fresh_output`): one that holds files (an earlier
    ablation's runs, hours of training) is refused unless ``overwrite``, which replaces only what an earlier ablation
    wrote there (:data:`ABLATION_FILES`), never a file anncore did not write.

    ``size`` is the ``(H, W)`` of the inference timing (default: the training crop). ``jobs`` > 1 trains that many
    runs at a time in subprocesses (module docstring). Progress over the runs, with an ETA, as
    :mod:`anncore.progress` shows it (runs in this process show their own, :func:`anncore.engine.train.train`).
    """
    if jobs < 1:
        raise BadInput(f"jobs must be >= 1, got {jobs}")
    if not heads or not seeds:
        raise BadInput(f"heads and seeds must not be empty, got heads={list(heads)} seeds={list(seeds)}")
    size = tuple(size or base.crop)
    data_root_of(base)  # write the synthetic set once, before any run (parallel runs would race to write it)
    configs = [
        replace(base, head=head, seed=seed, out=str(Path(out_dir) / head / f"seed{seed}"), resume=False)
        for seed in seeds
        for head in heads
    ]
    with fresh_output(out_dir, "--out", overwrite, known=ABLATION_FILES):
        threads = max(1, (os.cpu_count() or 1) // jobs)
        load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
        started = time.perf_counter()
        with Progress(len(configs), "ablation", "run") as shown:
            if jobs == 1:
                for config in configs:
                    train(config)
                    shown.update(1, {"trained": f"{config.head} seed {config.seed}"})
            else:
                with ThreadPoolExecutor(jobs) as pool:
                    running = {pool.submit(_train_subprocess, c, threads): c for c in configs}
                    for future in as_completed(running):
                        future.result()  # a failed run raises here, naming itself
                        shown.update(1, {"trained": f"{running[future].head} seed {running[future].seed}"})
    train_wall = time.perf_counter() - started
    device = pick_device(base.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBackboneWarning)
        runs = [run_record(config, size, device) for config in configs]
    return {
        "kind": "ablation",
        "created": utc_stamp(),
        "data": "synthetic" if is_synthetic(data_root_of(base)) else "cityscapes",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "machine": {
            "cpu_count": os.cpu_count(),
            "jobs": jobs,
            "threads_per_job": threads if jobs > 1 else torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
        },
        "torch": torch.__version__,
        "config": {k: v for k, v in plain_config(base).items() if k not in ("head", "out", "resume", "seed")},
        "heads": list(heads),
        "seeds": list(seeds),
        "train_wall_time_s": train_wall,
        "wall_time_s": time.perf_counter() - started,
        "runs": runs,
        "summary": summarise(runs, heads),
    }


def write_ablation(document: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``document`` as ``out_dir/ablation-<data>-<cpu|cuda|mps>-<created>.json`` and return the path."""
    device = document["device"].split(":")[0]
    path = Path(out_dir) / f"ablation-{document['data']}-{device}-{document['created']}.json"
    write_json(document, path)
    return path


def _documents(folder: str | Path, pattern: str, synthetic_cue: str) -> list[tuple[dict[str, Any], Path]]:
    """The documents matching ``pattern`` in ``folder`` that have per-seed runs and were trained on the synthetic cue
    variant ``synthetic_cue`` (their config's ``synthetic_cue``; documents written before the option existed: the
    default ``boards``), oldest first (by their ``created`` stamp)."""
    found = [(json.loads(p.read_text()), p) for p in Path(folder).glob(pattern)]
    kept = [
        (document, path)
        for document, path in found
        if "runs" in document and document.get("config", {}).get("synthetic_cue", "boards") == synthetic_cue
    ]
    return sorted(kept, key=lambda item: item[0]["created"])


def latest_ablation(
    folder: str | Path, pattern: str = "ablation-synthetic-*.json", synthetic_cue: str = "boards"
) -> tuple[Path, dict] | None:
    """The newest document matching ``pattern`` in ``folder`` that has per-seed runs and was trained on the synthetic
    cue variant ``synthetic_cue``, or ``None``. So an ablation on a variant (``params/afnb_variant.yaml``) never
    stands in for the course's ablation on the default set."""
    found = _documents(folder, pattern, synthetic_cue)
    if not found:
        return None
    document, path = found[-1]
    return path, document


def ablation_runs(folder: str | Path, synthetic_cue: str, pattern: str = "ablation-synthetic-*.json") -> pd.DataFrame:
    """Every per-seed run of every document in ``folder`` trained on ``synthetic_cue``, as :func:`runs_frame` rows
    indexed by ``(iters, head, seed)``: an experiment run in several commands (other heads, seeds or budgets) read
    as one table. Where two documents hold the same ``(iters, head, seed)`` the newer one's run is kept. An empty
    frame when there is none."""
    frames = []
    for document, _ in _documents(folder, pattern, synthetic_cue):
        frame = runs_frame(document)
        frames.append(pd.concat({int(document["config"]["iters"]): frame}, names=["iters"]))
    if not frames:
        return pd.DataFrame(columns=["iters", "head", "seed", *SUMMARISED]).set_index(["iters", "head", "seed"])
    runs = pd.concat(frames)
    return runs[~runs.index.duplicated(keep="last")].sort_index()


def ablation_frame(document: dict[str, Any]) -> pd.DataFrame:
    """One row per head: mean and sd over the seeds of mIoU, vehicle IoU, follow rate and cost, and parameters."""
    rows = []
    for head, entry in document["summary"].items():
        row: dict[str, Any] = {"head": head, "seeds": len(entry["seeds"])}
        for key in SUMMARISED:
            row[key] = entry[key]["mean"]
            row[f"{key} sd"] = entry[key]["sd"]
        row.update(
            {key: entry[key] for key in ("params", "head_params", "context_block_params")},
        )
        rows.append(row)
    return pd.DataFrame(rows).set_index("head")


def runs_frame(document: dict[str, Any]) -> pd.DataFrame:
    """One row per run (head, seed): mIoU, vehicle IoU, follow rate, cost."""
    columns = ["head", "seed", *SUMMARISED]
    return pd.DataFrame([{k: r.get(k) for k in columns} for r in document["runs"]]).set_index(["head", "seed"])


def per_class_frame(document: dict[str, Any]) -> pd.DataFrame:
    """Per-class IoU averaged over seeds, one column per head, one row per Cityscapes class."""
    columns = {}
    for head in document["heads"]:
        mine = [r["iou_per_class"] for r in document["runs"] if r["head"] == head]
        present = [[m[name] for m in mine if m[name] is not None] for name in CLASS_NAMES]
        columns[head] = [statistics.fmean(values) if values else float("nan") for values in present]
    return pd.DataFrame(columns, index=CLASS_NAMES)


def vehicle_confusion_frame(document: dict[str, Any], head: str) -> pd.DataFrame:
    """The car/truck/bus confusion sub-matrix of ``head``'s board-swap test summed over its seeds, as row
    fractions: rows the class the board announces, columns the predicted class (and ``other``)."""
    mine = [r["cue"]["confusion"] for r in document["runs"] if r["head"] == head and "cue" in r]
    if not mine:
        raise BadInput(f"no board-swap results for head {head!r} in this document")
    counts = pd.DataFrame(
        sum(pd.DataFrame(m["pixels"]).to_numpy() for m in mine), index=mine[0]["rows"], columns=mine[0]["columns"]
    )
    return counts.div(counts.sum(axis=1), axis=0)
