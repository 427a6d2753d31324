"""Joint image/mask transforms for Cityscapes training and validation (``torchvision.transforms.v2``).

Training follows the official recipe (reference sec. 4): random scale 0.5-2.0, random crop (769x769 official;
images smaller than the crop are padded, image with 0 and mask with 255 so padding is ignored), horizontal flip
with p = 0.5, photometric jitter, then ImageNet normalisation (torchvision's ImageNet backbones expect RGB mean/std;
the official code used caffe BGR means with its own backbone). The photometric jitter uses mmsegmentation's
``PhotoMetricDistortion`` ranges (brightness +-32/255 about mid-grey, contrast and saturation 0.5-1.5, hue +-18
degrees) as a ``ColorJitter``; the official code only jitters brightness by +-10.

Image and mask are ``tv_tensors.Image`` / ``tv_tensors.Mask``, so every geometric transform moves both the same
way and resizes the mask with nearest neighbour. All randomness comes from torch's RNG: ``torch.manual_seed``
fixes it, and a ``DataLoader`` seeds each worker differently (``base_seed + worker_id``), so workers never repeat
each other's augmentations. Validation normalises only and keeps the whole image (official single-scale eval).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from anncore.data.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_CROP = (769, 769)


class RandomScale(v2.Transform):
    """Resize image and mask by one factor drawn uniformly from ``scale_range`` (torch RNG): bilinear with
    antialiasing for the image, nearest for the mask (``v2.functional.resize`` dispatches on ``tv_tensors.Mask``).
    ``v2.RandomResize`` and ``v2.ScaleJitter`` draw a target size, not a factor of each image's own size."""

    def __init__(self, scale_range: Sequence[float] = (0.5, 2.0)) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {tuple(scale_range)}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        factor = torch.empty(()).uniform_(*self.scale_range).item()
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return v2.functional.resize(inpt, params["size"], antialias=True)


def _to_float() -> v2.ToDtype:
    """uint8 image -> float32 in [0, 1]; mask -> int64."""
    return v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True)


def train_transforms(
    crop_size: Sequence[int] = OFFICIAL_CROP,
    scale_range: Sequence[float] = (0.5, 2.0),
    flip_prob: float = 0.5,
    photometric: bool = True,
) -> v2.Compose:
    """The training augmentation: scale, crop ``crop_size`` (h, w) with padding, flip, jitter, normalise."""
    crop = tuple(crop_size)
    if len(crop) != 2 or not all(isinstance(v, int) and v > 0 for v in crop):
        raise ValueError(f"crop_size must be (height, width) positive ints, got {crop_size!r}")
    steps: list[v2.Transform] = [
        RandomScale(scale_range),
        v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        v2.RandomHorizontalFlip(flip_prob),
    ]
    steps.append(_to_float())  # before the jitter: ColorJitter is several times faster on float than on uint8
    if photometric:
        steps.append(v2.ColorJitter(brightness=32 / 128, contrast=0.5, saturation=0.5, hue=18 / 360))
    return v2.Compose([*steps, v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def val_transforms() -> v2.Compose:
    """Validation and test: the whole image, normalised only."""
    return v2.Compose([_to_float(), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def denormalize(image: torch.Tensor) -> np.ndarray:
    """A normalised ``(3, H, W)`` image back to ``(H, W, 3)`` uint8 RGB for display."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    rgb = (image.detach().cpu().float() * std + mean).clamp(0, 1) * 255
    return rgb.round().to(torch.uint8).permute(1, 2, 0).numpy()
