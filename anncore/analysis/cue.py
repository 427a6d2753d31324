"""The board-swap test: does a model read the distant cue of the synthetic set?

The synthetic set (:mod:`anncore.data.synthetic`) draws cars, trucks and buses from one appearance distribution and
announces their class only by a cue board on the other side of the image. :func:`board_swap` renders each validation
scene three times, once with each board (everything else pixel-identical, :func:`~anncore.data.synthetic.render_scene`
with ``cue=``), and counts the vehicle pixels whose predicted class follows the board. A model that reads the board
follows it on (nearly) every pixel; a model that cannot see it gives a scene's vehicles one class whatever the board,
so at most a third of them follow (chance is 1/3). This is the paper's claim (Sec. 1 and 3: long-range dependencies
decide ambiguous pixels) turned into a measurement that needs no real data.

``python -m anncore cue --checkpoint CK [--scenes N] [--seed S] [--json FILE]`` prints and writes the result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors

from anncore.data import CLASS_NAMES, val_transforms
from anncore.data.labels import LABELS
from anncore.data.root import SYNTHETIC, synthetic_set_of
from anncore.data.synthetic import CUE_BOARDS, MANIFEST, recorded_cue_variant, render_scene, scene_seed
from anncore.errors import BadInput
from anncore.models.checkpoint import load_checkpoint
from anncore.progress import progress

#: Classes the synthetic set decides only through the cue board, in :data:`CUE_BOARDS` order.
VEHICLES: tuple[str, ...] = tuple(CUE_BOARDS)
#: Train ids of :data:`VEHICLES`.
VEHICLE_IDS: tuple[int, ...] = tuple(CLASS_NAMES.index(name) for name in VEHICLES)


@dataclass(frozen=True)
class BoardSwap:
    """The result of :func:`board_swap`.

    Attributes:
        follow_rate: fraction of all vehicle pixels (over every scene and board) predicted as the board's class.
        follow_rate_per_cue: the same, per board (``{"car": ..., "truck": ..., "bus": ...}``).
        confusion: ``(3, 4)`` pixel counts, rows the board's class (car, truck, bus), columns the predicted class
            (car, truck, bus, any other class): the car/truck/bus confusion sub-matrix.
        scenes: number of validation scenes rendered (each three times).
        vehicle_pixels: vehicle pixels counted per rendering (summed over scenes).
    """

    follow_rate: float
    follow_rate_per_cue: dict[str, float]
    confusion: np.ndarray
    scenes: int
    vehicle_pixels: int

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready values (the ``--json`` document of ``python -m anncore cue``)."""
        return {
            "follow_rate": self.follow_rate,
            "follow_rate_per_cue": self.follow_rate_per_cue,
            "confusion": {
                "rows": list(VEHICLES),
                "columns": [*VEHICLES, "other"],
                "pixels": self.confusion.tolist(),
            },
            "scenes": self.scenes,
            "vehicle_pixels": self.vehicle_pixels,
            "chance": 1 / len(VEHICLES),
        }


def vehicle_confusion(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """``(3, 4)`` counts of vehicle pixels: rows the true vehicle class of ``target`` (train ids), columns the
    predicted car / truck / bus / other class in ``pred``. Pixels that are not vehicles in ``target`` are skipped."""
    counts = np.zeros((len(VEHICLES), len(VEHICLES) + 1), dtype=np.int64)
    pred, target = pred.cpu(), target.cpu()
    for row, truth in enumerate(VEHICLE_IDS):
        predicted = pred[target == truth]
        for col, cls in enumerate(VEHICLE_IDS):
            counts[row, col] = int((predicted == cls).sum())
        counts[row, -1] = predicted.numel() - counts[row, :-1].sum()
    return counts


@torch.no_grad()
def board_swap(
    model: nn.Module,
    scenes: int = 30,
    size: Sequence[int] = (128, 256),
    seed: int = 0,
    device: torch.device | str = "cpu",
    cue_variant: str = "boards",
) -> BoardSwap:
    """Render validation scenes ``0 .. scenes - 1`` of the synthetic set with data seed ``seed`` at ``size``
    (H, W) once with each board, predict (whole image, eval mode) and count what follows the board (module
    docstring). The scenes are those :func:`~anncore.data.synthetic.write_synthetic_cityscapes` writes as the
    ``val`` split with the same seed and ``cue_variant`` (:data:`~anncore.data.synthetic.CUE_VARIANTS`), so the test
    runs on the frames a model was validated on. Progress, with an
    ETA, as :mod:`anncore.progress` shows it."""
    if scenes < 1:
        raise BadInput(f"scenes must be >= 1, got {scenes}")
    height, width = (int(v) for v in size)
    device = torch.device(device)
    model.eval()
    normalise = val_transforms()
    confusion = np.zeros((len(VEHICLES), len(VEHICLES) + 1), dtype=np.int64)
    pixels = 0
    for index in progress(range(scenes), scenes, "board-swap test", "scene"):
        seeded = scene_seed(seed, "val", index)
        renders = [render_scene(seeded, height, width, cue=cue, cue_variant=cue_variant) for cue in VEHICLES]
        images = torch.stack([normalise(tv_tensors.Image(torch.from_numpy(r.image).permute(2, 0, 1))) for r in renders])
        pred = model(images.to(device))["out"].argmax(1).cpu()
        vehicles = torch.from_numpy(np.isin(renders[0].label_ids(), _VEHICLE_LABEL_IDS))
        pixels += int(vehicles.sum())
        for row, cls in enumerate(VEHICLE_IDS):  # each rendering's vehicles carry the class of its board
            target = torch.where(vehicles, cls, -1)
            confusion += vehicle_confusion(pred[row], target)
    per_cue = {
        name: float(confusion[row, row] / confusion[row].sum()) if confusion[row].sum() else float("nan")
        for row, name in enumerate(VEHICLES)
    }
    total = confusion.sum()
    follow = float(np.trace(confusion[:, : len(VEHICLES)]) / total) if total else float("nan")
    return BoardSwap(follow, per_cue, confusion, scenes, pixels)


def _label_ids(names: Sequence[str]) -> list[int]:

    return [LABELS[name].id for name in names]


_VEHICLE_LABEL_IDS = _label_ids(VEHICLES)


class SceneSettings(TypedDict):
    """The :func:`board_swap` keyword arguments that pick the rendered scenes."""

    scenes: int
    size: Sequence[int]
    seed: int
    cue_variant: str


def val_scenes(root: str | Path) -> SceneSettings | None:
    """``{"scenes", "size", "seed", "cue_variant"}`` of the synthetic set written in ``root`` (its manifest), or
    ``None`` when
    ``root`` holds no synthetic set: what :func:`board_swap` renders to test a model trained on it."""

    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return None
    recorded = json.loads(manifest.read_text())
    size, variant = (recorded["height"], recorded["width"]), recorded_cue_variant(recorded)
    return {"scenes": recorded["val"], "size": size, "seed": recorded["seed"], "cue_variant": variant}


def cue_settings(
    checkpoint: str | Path, scenes: int = 30, size: Sequence[int] | None = None, seed: int | None = None
) -> SceneSettings:
    """The :func:`board_swap` arguments for a checkpoint: ``size`` and ``seed`` default to those of the synthetic
    set it was trained on (its recorded training config), else 128x256 and seed 0."""

    config = load_checkpoint(checkpoint).get("config", {})
    synthetic = synthetic_set_of(config)
    trained: SceneSettings = {"scenes": scenes, "size": (synthetic.height, synthetic.width), "seed": synthetic.seed,
                              "cue_variant": synthetic.cue_variant}  # fmt: skip
    given = config.get("data_root") or ""
    trained = val_scenes(synthetic.root if given in ("", SYNTHETIC) else given) or trained
    return {
        "scenes": scenes,
        "size": tuple(size) if size else trained["size"],
        "seed": trained["seed"] if seed is None else seed,
        "cue_variant": trained["cue_variant"],
    }
