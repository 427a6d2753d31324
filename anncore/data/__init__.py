"""Cityscapes data: the label table (``labels``), the loader (``cityscapes``), the joint transforms (``transforms``)
and a synthetic Cityscapes set (``synthetic``).

``from anncore.data import CityscapesSegmentation, train_transforms, val_transforms``; the synthetic generator is
``anncore.data.synthetic`` (``python -m anncore synth``). See ``data/README.md`` for getting the real data set.
"""

from anncore.data.cityscapes import CityscapesSegmentation, find_samples
from anncore.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, colorize, train_id_to_label_id
from anncore.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, train_transforms, val_transforms

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_CLASSES",
    "PALETTE",
    "CityscapesSegmentation",
    "colorize",
    "denormalize",
    "find_samples",
    "train_id_to_label_id",
    "train_transforms",
    "val_transforms",
]
