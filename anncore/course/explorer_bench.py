"""The explorer benchmark (``python -m anncore bench --suite explorer``): whether
:class:`anncore.course.widgets.AttentionExplorer` stays responsive at full Cityscapes resolution.

Default one 1024x2048 image (``sizes`` are image sizes here): the real explorer on the real ResNet-101 ANN head
(:class:`~anncore.models.heads.ANNHead`) fed by a stand-in backbone (:class:`StandInBackbone`: average pooling
by 8 and fixed random 1x1 convs to layer3 and layer4 widths), so that no ResNet-101 forward at 1024x2048 is needed.
Timed: opening the explorer on the image (one forward, the capture, the prediction and the first view) and, per
captured block (AFNB, APNB and their "without pyramid" non-local views), ``repeats`` slider moves to distinct query
cells (:meth:`~anncore.course.widgets.AttentionExplorer.select`), as the whole call and as the widget's own
``last_update_ms``. The first move of a block pays its projections and is reported apart; the target
(:data:`EXPLORER_TARGET_MS`) is on the median of the others. Its settings and their checks are the suite's
:class:`~anncore.analysis.bench.BenchConfig`; it lives with the course because it times the course's widget.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from tqdm import tqdm

from anncore.analysis.bench import EXPLORER_STRIDE, BenchConfig, environment_of, threads_of
from anncore.analysis.cost import time_step
from anncore.course.widgets import AttentionExplorer
from anncore.data.labels import LABEL_ID_TO_TRAIN_ID, NUM_CLASSES, lookup
from anncore.data.synthetic import make_scene
from anncore.data.transforms import val_transforms
from anncore.files import utc_stamp
from anncore.models.heads import HEAD_WIDTHS, ANNHead, HeadWidths
from anncore.nn.pyramid import num_anchors

EXPLORER_TARGET_MS = 100.0  # a slider move on a CPU, rendering included (issue "real checkpoints", item 4)


EXPLORER_MODEL = "stand-in backbone (avg-pool /8 + 1x1 convs) + the ResNet-101 ANN head"


# ------------------------------------------------------------------------------------------------ explorer suite
class StandInBackbone(nn.Module):
    """What the explorer suite runs instead of ResNet-101: ``(B, 3, H, W)`` images average-pooled by 8 (the dilated
    ResNet's output stride) and mapped by fixed random 1x1 convs to layer3- and layer4-shaped features ``(low,
    high)``. Its features mean nothing; it makes the head's and the explorer's tensors the real shapes."""

    def __init__(self, low_channels: int, high_channels: int) -> None:
        super().__init__()
        self.low_channels, self.high_channels = low_channels, high_channels
        self.layer3 = nn.Conv2d(3, low_channels, 1)
        self.layer4 = nn.Conv2d(3, high_channels, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = F.avg_pool2d(images, EXPLORER_STRIDE)
        return self.layer3(pooled), self.layer4(pooled)


class StandInANN(nn.Module):
    """:class:`StandInBackbone` + the real :class:`~anncore.models.heads.ANNHead`; ``model(images)`` returns
    ``{"out": logits}`` upsampled to the image size as :class:`~anncore.models.network.ANN` does in eval mode."""

    def __init__(self, high_channels: int, widths: HeadWidths, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.backbone = StandInBackbone(high_channels // 2, high_channels)
        self.head = ANNHead(high_channels // 2, high_channels, widths, num_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        low, high = self.backbone(images)
        logits = self.head(low, high)
        return {"out": F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=True)}


def explorer_widths(config: BenchConfig) -> HeadWidths:
    """The head's widths: ResNet-101's (512/256/256/512) at the default 2048 channels and Ck = Cv = 256, else
    scaled the same way (context and aux a quarter of layer4's channels; ``--quick``: tiny)."""
    if (config.channels, config.kv_channels) == (2048, 256):
        return HEAD_WIDTHS["resnet101"]
    quarter = config.channels // 4
    return HeadWidths(quarter, config.kv_channels, config.kv_channels, quarter)


def _explorer_model_name(config: BenchConfig) -> str:
    if explorer_widths(config) == HEAD_WIDTHS["resnet101"] and config.channels == 2048:
        return EXPLORER_MODEL
    widths = explorer_widths(config)
    return (
        f"stand-in backbone (avg-pool /8 + 1x1 convs) + a scaled-down ANN head (layer3 {config.channels // 2}, "
        f"layer4 {config.channels}, context {widths.context}, Ck = Cv = {widths.key} channels)"
    )


def explorer_sample(height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic street scene (:func:`anncore.data.synthetic.make_scene`) as the validation set gives images:
    ``(image (3, H, W) normalised, label (H, W) train ids)``. A scene rather than noise, so that the PNGs the
    explorer encodes compress as a photograph's do."""
    image, label_ids = make_scene(seed, height, width)
    train_ids = lookup(label_ids, LABEL_ID_TO_TRAIN_ID, "labels").astype(np.uint8)
    pair = val_transforms()(
        tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)), tv_tensors.Mask(torch.from_numpy(train_ids))
    )
    return torch.Tensor(pair[0]), torch.Tensor(pair[1])


def query_cells(query_size: tuple[int, int], count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` distinct cells ``(row, col)`` of the ``query_size`` grid, in a fixed random order."""
    h, w = query_size
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))[:count].tolist()
    return [(index // w, index % w) for index in order]


def _summary(times_ms: Sequence[float]) -> dict[str, object]:
    return {"median": statistics.median(times_ms), "max": max(times_ms), "all": list(times_ms)}


def _time_block(explorer: AttentionExplorer, name: str, config: BenchConfig, first_shown: bool) -> dict:
    """``config.repeats`` moves of the query on block ``name`` (selected by the first one), each timed whole
    (:func:`anncore.analysis.cost.time_step`) and by the widget (``last_update_ms``)."""
    captured = explorer.capture.blocks[name]
    cells = query_cells(captured.query_size, config.repeats, config.seed)
    pending, widget_ms = iter(cells), []

    def move() -> None:
        explorer.select(block=name, cell=next(pending))
        widget_ms.append(explorer.last_update_ms)

    select_ms = time_step(move, config.device, len(cells))
    pools = captured.pool_sizes
    sent = len(explorer.attention_image.value) + (len(explorer.anchor_image.value) if pools is not None else 0)
    median = statistics.median(select_ms[1:])
    return {
        "block": name,
        "keys": captured.key_size[0] * captured.key_size[1] if pools is None else num_anchors(pools),
        "query_size": list(captured.query_size),
        "key_size": list(captured.key_size),
        "cells": [list(cell) for cell in cells],
        "projections_at_load": first_shown,
        "first_move_select_ms": select_ms[0],
        "first_move_widget_ms": widget_ms[0],
        "moves": len(select_ms) - 1,
        "select_ms": _summary(select_ms[1:]),
        "widget_ms": _summary(widget_ms[1:]),
        "png_bytes": sent,
        "meets_target": median <= EXPLORER_TARGET_MS,
    }


def _measure_explorer(hw: tuple[int, int], config: BenchConfig) -> dict:
    torch.manual_seed(config.seed)
    model = StandInANN(config.channels, explorer_widths(config)).to(config.device).eval()
    samples = [explorer_sample(*hw, seed=config.seed)]
    opened: list[AttentionExplorer] = []
    (load_ms,) = time_step(
        lambda: opened.append(AttentionExplorer(model, samples, without_pyramid=config.without_pyramid)),
        config.device,
        1,
    )
    explorer = opened[0]
    first_view_ms, first_shown = explorer.last_update_ms, explorer.block_menu.value
    blocks = [_time_block(explorer, name, config, name == first_shown) for name in explorer.capture.blocks]
    return {
        "height": hw[0],
        "width": hw[1],
        "feature_size": [hw[0] // EXPLORER_STRIDE, hw[1] // EXPLORER_STRIDE],
        "load_ms": load_ms,
        "load_first_view_ms": first_view_ms,
        "first_block": first_shown,
        "blocks": blocks,
        "meets_target": all(block["meets_target"] for block in blocks),
    }


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def run_explorer(config: BenchConfig, progress: bool = True) -> list[dict]:
    """The suite's one document (module docstring), under :func:`~anncore.analysis.bench.threads_of`."""
    with threads_of(config):
        return _run_explorer(config, progress)


def _run_explorer(config: BenchConfig, progress: bool) -> list[dict]:
    created = utc_stamp()
    load_before = _load_average()
    env = environment_of(config.device)
    bar = tqdm(config.sizes, desc="bench explorer", disable=None if progress else True, leave=False)
    results = []
    for hw in bar:
        bar.set_postfix_str(f"{hw[0]}x{hw[1]}")
        results.append(_measure_explorer(hw, config))
    document: dict[str, object] = {"suite": config.suite, "quick": config.quick, "created": created}
    document |= {"device": str(config.device), "dtype": "float32", "memory_format": config.memory_format}
    document |= {"threads": torch.get_num_threads(), "torch": torch.__version__}
    document |= {"channels": config.channels, "low_channels": config.channels // 2, "kv_channels": config.kv_channels}
    document |= {"head_widths": asdict(explorer_widths(config)), "batch": 1, "seed": config.seed}
    document |= {"sizes": [list(hw) for hw in config.sizes], "repeats": config.repeats}
    document |= {"without_pyramid": config.without_pyramid, "model": _explorer_model_name(config)}
    document["unit"] = "anncore.course.widgets.AttentionExplorer: opening it on one image, then slider moves per block"
    document["image"] = "synthetic street scene (anncore.data.synthetic.make_scene), val_transforms-normalised"
    document["env"] = env
    document["load_average_before"] = load_before
    document["load_average_after"] = _load_average()
    document["time_method"] = (
        "anncore.analysis.cost.time_step (device-synchronised perf_counter), one call per figure: load_ms = "
        "constructing the explorer (one forward, capture, prediction image, first view); per block, repeats moves to "
        "distinct cells via select(block, cell): select_ms the whole call, widget_ms the explorer's last_update_ms "
        "(its _refresh, rendering and PNG encoding included); the first move (which pays the block's projections, "
        "unless projections_at_load) is reported apart, median and max over the others. Sending the PNGs to a "
        "browser and drawing them there are not measured."
    )
    document["target_ms"] = EXPLORER_TARGET_MS
    document["target_on"] = "median select_ms of the moves after the first, per block"
    document["results"] = results
    document["meets_target"] = all(r["meets_target"] for r in results)
    return [document]


def format_explorer(document: dict) -> str:
    """The explorer suite's table: load time, then per block the first move and the median / max of the others."""
    env, before, after = document["env"], document["load_average_before"], document["load_average_after"]
    load = "-" if before is None or after is None else f"{before[0]:.2f} -> {after[0]:.2f}"
    lines = [
        f"explorer suite, {document['model']}",
        f"{env['device']} ({env['device_name']}), torch {document['torch']}, {document['threads']} threads, "
        f"1-min load average {load}; target: median move <= {document['target_ms']:g} ms",
    ]
    for r in document["results"]:
        lines.append(
            f"image {r['height']}x{r['width']} (features {r['feature_size'][0]}x{r['feature_size'][1]}): "
            f"load {r['load_ms']:.0f} ms"
        )
        lines.append(
            f"  {'block':<22}{'keys':>7}{'first ms':>10}{'median ms':>11}{'max ms':>9}{'widget med':>12}"
            f"{'PNG KiB':>9}  target"
        )
        for b in r["blocks"]:
            lines.append(
                f"  {b['block']:<22}{b['keys']:>7}{b['first_move_select_ms']:>10.1f}{b['select_ms']['median']:>11.1f}"
                f"{b['select_ms']['max']:>9.1f}{b['widget_ms']['median']:>12.1f}{b['png_bytes'] / 1024:>9.0f}  "
                f"{'met' if b['meets_target'] else 'MISSED'}"
            )
    return "\n".join(lines)
