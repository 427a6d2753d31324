"""Inference and evaluation: whole image, sliding window, multi-scale + flip (paper Sec. 4, "validation" and
"test server" rows), the confusion-matrix metrics, and Cityscapes-format prediction files.

Every inference mode reduces to one mechanism: :func:`predict_probs` averages softmax probabilities over a set of
views of the image (scales x flips), each view inferred whole or by overlapping windows whose probabilities are
averaged where they overlap. The official code's single-scale validation is one view, whole image; its test-server
setting is scales 0.75/1.0/1.25 + flip with 864 windows at stride 576 (:data:`PRESETS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from anncore.data import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    CityscapesSegmentation,
    colorize,
    denormalize,
    train_id_to_label_id,
    val_transforms,
)
from anncore.data.cityscapes import data_record
from anncore.data.root import resolve_data_root, synthetic_set_of
from anncore.device import pick_device
from anncore.engine.config import finite
from anncore.engine.metrics import ConfusionMatrix
from anncore.errors import BadInput
from anncore.files import write_json
from anncore.models.checkpoint import load_checkpoint
from anncore.models.loading import load_model, resolve_checkpoint
from anncore.outputs import fresh_output
from anncore.progress import progress

Logits = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InferenceConfig:
    """How to turn an image into class probabilities.

    Attributes:
        scales: image scales to infer at; probabilities are resized back and averaged.
        flip: also infer on the horizontally flipped image (and flip the result back).
        crop: ``(h, w)`` sliding-window size, or ``None`` for the whole image at once.
        stride: ``(h, w)`` window stride; defaults to two thirds of the crop (mmsegmentation's 769/513 ratio).
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for scale in self.scales:
            finite("scales", scale)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise BadInput(f"scales must be positive numbers, got {self.scales}")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) <= 0):
            raise BadInput(f"crop must be (height, width) > 0 or None, got {self.crop}")
        if self.stride is not None and (self.crop is None or len(self.stride) != 2 or min(self.stride) <= 0):
            raise BadInput(f"stride needs a crop and must be (height, width) > 0, got stride={self.stride}")
        if (
            self.stride is not None
            and self.crop is not None
            and any(s > c for s, c in zip(self.stride, self.crop, strict=True))
        ):
            raise BadInput(
                f"stride {tuple(self.stride)} is larger than the crop {tuple(self.crop)}: the windows would leave "
                "pixels between them unpredicted; use a stride <= the crop (two thirds of it is the usual)"
            )


PRESETS: dict[str, InferenceConfig] = {
    # official validation: whole 1024x2048 image, single scale
    "whole": InferenceConfig(),
    # mmsegmentation's 769x769 configs: sliding 769 windows, stride 513
    "slide769": InferenceConfig(crop=(769, 769), stride=(513, 513)),
    # official test-server setting: scales 0.75/1.0/1.25 + flip, sliding 864 crops, stride 576
    "official-test": InferenceConfig(scales=(0.75, 1.0, 1.25), flip=True, crop=(864, 864), stride=(576, 576)),
}


def model_logits(model: nn.Module) -> Logits:
    """Wrap a segmentation model whose forward returns logits or a dict with ``"out"`` (the ANN models)."""

    def logits(images: torch.Tensor) -> torch.Tensor:
        out = model(images)
        return out["out"] if isinstance(out, dict) else out

    return logits


def _window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window origins covering ``[0, length)`` with the last window flush with the end (mmsegmentation's grid)."""
    if length <= crop:
        return [0]
    count = math.ceil((length - crop) / stride) + 1
    return [min(i * stride, length - crop) for i in range(count)]


def _slide_probs(logits: Logits, image: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Softmax probabilities of ``image (B, 3, H, W)`` from overlapping windows; images smaller than the crop are
    zero-padded (as in training) and the padding cropped off."""
    _, _, height, width = image.shape
    pad_h, pad_w = max(crop[0] - height, 0), max(crop[1] - width, 0)
    padded = F.pad(image, (0, pad_w, 0, pad_h))
    total = None
    count = torch.zeros(1, 1, *padded.shape[2:], device=image.device)
    for y in _window_starts(padded.shape[2], crop[0], stride[0]):
        for x in _window_starts(padded.shape[3], crop[1], stride[1]):
            window = padded[:, :, y : y + crop[0], x : x + crop[1]]
            probs = logits(window).float().softmax(1)
            if total is None:
                total = torch.zeros(image.shape[0], probs.shape[1], *padded.shape[2:], device=image.device)
            total[:, :, y : y + crop[0], x : x + crop[1]] += probs
            count[:, :, y : y + crop[0], x : x + crop[1]] += 1
    return (cast(torch.Tensor, total) / count)[:, :, :height, :width]  # set by the first of >= 1 windows


@torch.no_grad()
def predict_probs(logits: Logits, image: torch.Tensor, config: InferenceConfig = InferenceConfig()) -> torch.Tensor:
    """Class probabilities ``(B, K, H, W)`` for normalised images ``(B, 3, H, W)``, averaged over all views."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    size = image.shape[2:]
    stride = config.stride or (config.crop and tuple(max(1, c * 2 // 3) for c in config.crop))
    total = None
    for scale in config.scales:
        scaled = (
            image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=True)
        )
        for flipped in (False, True) if config.flip else (False,):
            view = scaled.flip(3) if flipped else scaled
            if config.crop is None:
                probs = logits(view).float().softmax(1)
            else:
                probs = _slide_probs(logits, view, config.crop, cast("tuple[int, int]", stride))  # set with a crop
            if flipped:
                probs = probs.flip(3)
            if probs.shape[2:] != size:
                probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=True)
            total = probs if total is None else total + probs
    # set by the first view: InferenceConfig refuses an empty ``scales``
    return cast(torch.Tensor, total) / (len(config.scales) * (2 if config.flip else 1))


def save_prediction(
    pred: np.ndarray, image_id: str, out_dir: Path, image: np.ndarray | None = None, overlay_dir: Path | None = None
) -> Path:
    """Write ``out_dir/{image_id}_pred.png`` in Cityscapes **label-id** space (what the official evaluation and the
    benchmark server read) and, with the RGB ``image``, a colour overlay ``overlay_dir/{image_id}_overlay.png``.
    The overlays go to their own folder (default: ``overlays`` beside ``out_dir``): cityscapesscripts' evaluator
    takes every ``{image_id}*.png`` in the predictions folder for a prediction and refuses two per image."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{image_id}_pred.png"
    Image.fromarray(train_id_to_label_id(pred).astype(np.uint8)).save(path)
    if image is not None:
        overlays = overlay_dir or out_dir.with_name("overlays")
        overlays.mkdir(parents=True, exist_ok=True)
        overlay = (0.5 * image.astype(np.float32) + 0.5 * colorize(pred).astype(np.float32)).astype(np.uint8)
        Image.fromarray(overlay).save(overlays / f"{image_id}_overlay.png")
    return path


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured; ``metrics`` is :meth:`ConfusionMatrix.compute`'s dictionary."""

    metrics: dict
    confusion: np.ndarray
    config: dict = field(default_factory=dict)
    images: int = 0


@torch.no_grad()
def confusion_over(
    predict: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    after_batch: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> ConfusionMatrix:
    """The one evaluation loop: ``predict`` (images on ``device`` -> ``(B, H, W)`` class ids) over ``batches`` of
    ``(images, masks)``, accumulated into a confusion matrix on ``device``; ``after_batch(i, images, predictions)``
    sees each batch (saving predictions). Training's validation and :func:`evaluate` both run it."""
    confusion = ConfusionMatrix(num_classes, ignore_index, device)
    for i, (images, masks) in enumerate(batches):
        predictions = predict(images.to(device, non_blocking=True))
        confusion.update(predictions, masks.to(device, non_blocking=True))
        if after_batch is not None:
            after_batch(i, images, predictions)
    return confusion


def evaluate(
    model: nn.Module,
    dataset: CityscapesSegmentation,
    config: InferenceConfig = InferenceConfig(),
    device: torch.device | str = "cpu",
    predictions_dir: Path | None = None,
    limit: int | None = None,
) -> EvaluationResult:
    """Run ``model`` over ``dataset`` (items ``(image, mask)`` as :class:`anncore.data.CityscapesSegmentation`
    gives with validation transforms), accumulate the 19-class confusion matrix, optionally save predictions.
    Progress, with an ETA, as :mod:`anncore.progress` shows it (a bar on a terminal, else plain lines)."""
    if limit is not None and limit < 1:
        raise BadInput(f"limit must be a number of images >= 1 (or None for all), got {limit}")
    classes = getattr(model, "config", {}).get("num_classes", NUM_CLASSES)
    if classes != NUM_CLASSES:
        raise BadInput(
            f"the model predicts {classes} classes, but evaluation scores Cityscapes' {NUM_CLASSES} train ids"
        )
    device = torch.device(device)
    model.eval().to(device)
    logits = model_logits(model)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    images = ((image[None], mask[None]) for image, mask in (dataset[i] for i in range(count)))

    def save(index: int, image: torch.Tensor, prediction: torch.Tensor) -> None:
        if predictions_dir is not None:
            image_id = dataset.image_id(index)
            save_prediction(prediction[0].cpu().numpy(), image_id, predictions_dir, denormalize(image[0]))

    confusion = confusion_over(
        lambda image: predict_probs(logits, image, config).argmax(1),
        progress(images, count, "evaluate", "image"),
        device,
        after_batch=save,
    )
    return EvaluationResult(confusion.compute(), confusion.matrix.cpu().numpy(), asdict(config), count)


def write_metrics(result: EvaluationResult, out_dir: Path, extra: dict | None = None) -> Path:
    """``OUT/metrics.json``: mIoU, per-class IoU, pixel accuracy, the inference config and the confusion matrix."""
    payload = {
        **result.metrics,
        "class_names": list(CLASS_NAMES),
        "images": result.images,
        "inference": result.config,
        "confusion": result.confusion.tolist(),
        **(extra or {}),
    }
    return write_json(payload, out_dir / "metrics.json")


def inference_config(
    preset: str | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    crop: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
) -> InferenceConfig:
    """A preset from :data:`PRESETS` (default ``whole``) with any given option replacing the preset's value."""
    name = preset or "whole"
    if name not in PRESETS:
        raise BadInput(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    base = PRESETS[name]
    return InferenceConfig(
        scales=tuple(scales) if scales else base.scales,
        flip=base.flip if flip is None else flip,
        # two ints each, or InferenceConfig raises naming the option
        crop=cast("tuple[int, int]", tuple(crop)) if crop else base.crop,
        stride=cast("tuple[int, int]", tuple(stride)) if stride else base.stride,
    )


def evaluation_data_root(checkpoint: str | Path, data_root: str | Path | None = None) -> Path:
    """Where to evaluate ``checkpoint``: the one data-root rule (:func:`~anncore.data.root.resolve_data_root`), the
    synthetic set being the one the checkpoint was trained on (its recorded config, e.g. the course model's 128x256
    set of 400 + 30 scenes)."""

    trained = load_checkpoint(resolve_checkpoint(checkpoint)).get("config", {})
    return resolve_data_root(data_root, synthetic_set_of(trained))


#: The files an evaluation writes into its ``--out`` (``--overwrite`` replaces them, recorded or not).
EVALUATION_FILES = ("metrics.json", "predictions/*_pred.png", "overlays/*_overlay.png")


def run_evaluation(
    checkpoint: Path,
    data_root: str | Path | None,
    out_dir: Path,
    split: str = "val",
    config: InferenceConfig = InferenceConfig(),
    device: str = "auto",
    save_predictions: bool = False,
    limit: int | None = None,
    overwrite: bool = False,
) -> EvaluationResult:
    """``python -m anncore evaluate``: load a training checkpoint, evaluate a split, write ``OUT/metrics.json`` and
    (with ``save_predictions``) ``OUT/predictions/{city}_{seq}_{frame}_pred.png`` plus colour overlays, into an
    ``out_dir`` of its own (:func:`~anncore.outputs.fresh_output`: refused when it holds files, unless ``overwrite``
    replaces an earlier evaluation's)."""

    dev = pick_device(device)
    model = load_model(checkpoint, map_location=dev)
    data_root = evaluation_data_root(checkpoint, data_root)
    dataset = CityscapesSegmentation(data_root, split=split, transforms=val_transforms())
    with fresh_output(out_dir, "--out", overwrite, EVALUATION_FILES):
        predictions = out_dir / "predictions" if save_predictions else None
        result = evaluate(model, dataset, config, dev, predictions, limit)
        extra = {"checkpoint": str(checkpoint), "data_root": str(data_root), "split": split, "model": model.config,
                 "data": data_record(data_root, [dataset])}  # fmt: skip  # root, image count, file-list fingerprint
        write_metrics(result, out_dir, extra)
    return result
