"""The Cityscapes label table: the 19 evaluated train ids (names, official colours), the ignore index and the id
lookups between ``labelIds`` (what cityscapesscripts' evaluator reads) and train ids (what the network predicts).

The table is torchvision's ``datasets.Cityscapes.classes``, a copy of the official
``cityscapesscripts.helpers.labels``: 34 label ids (plus ``license plate``, id -1, never in a PNG). The 19 evaluated
classes are the label ids 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, in that order
(train ids 0..18); every other label id maps to :data:`IGNORE_INDEX`, ignored in training and evaluation.
This module imports nothing of the package, so losses, metrics, transforms and the loader all read it.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch
from torchvision.datasets import Cityscapes

from anncore.errors import BadInput

#: Every official label by name (``name, id, train_id, category, ..., has_instances, ignore_in_eval, color``).
LABELS = {label.name: label for label in Cityscapes.classes if label.id >= 0}
_TRAIN_LABELS = sorted((label for label in LABELS.values() if label.train_id != 255), key=lambda label: label.train_id)

IGNORE_INDEX = 255
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN_LABELS)
NUM_CLASSES = len(CLASS_NAMES)
#: Official colours of the 19 train ids, ``(19, 3)`` uint8 RGB.
PALETTE: np.ndarray = np.array([label.color for label in _TRAIN_LABELS], dtype=np.uint8)

#: ``labelIds`` value -> train id (255 for void ids); -1 marks a value that is no Cityscapes label id.
LABEL_ID_TO_TRAIN_ID = np.full(256, -1, dtype=np.int16)
for _label in LABELS.values():
    LABEL_ID_TO_TRAIN_ID[_label.id] = _label.train_id
#: ``labelTrainIds`` value -> itself for 0..18 and 255; -1 marks anything else.
TRAIN_ID_TO_TRAIN_ID = np.full(256, -1, dtype=np.int16)
TRAIN_ID_TO_TRAIN_ID[:NUM_CLASSES] = np.arange(NUM_CLASSES)
TRAIN_ID_TO_TRAIN_ID[IGNORE_INDEX] = IGNORE_INDEX
#: Train id -> label id for submissions (255 -> 0, ``unlabeled``); -1 marks anything else.
TRAIN_ID_TO_LABEL_ID = np.full(256, -1, dtype=np.int16)
TRAIN_ID_TO_LABEL_ID[:NUM_CLASSES] = [label.id for label in _TRAIN_LABELS]
TRAIN_ID_TO_LABEL_ID[IGNORE_INDEX] = LABELS["unlabeled"].id


def lookup(values: np.ndarray | torch.Tensor, table: np.ndarray, what: str) -> np.ndarray:
    """``table[values]`` for integer ``values`` in 0..255; raises :class:`~anncore.errors.BadInput` (a
    ``ValueError``: a label file holding ids it should not is the user's data, said in one line) naming ``what``
    and the bad values when a value is outside the table's domain (table entry -1)."""
    array = values.numpy(force=True) if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{what}: expected an integer array, got dtype {array.dtype}")  # a programming error
    inside = (array >= 0) & (array <= 255)
    mapped = np.full(array.shape, -1, dtype=np.int16)
    mapped[inside] = table[array[inside]]
    if (mapped < 0).any():
        bad = np.unique(array[mapped < 0])[:10].tolist()
        raise BadInput(f"{what}: values {bad} are not valid here")
    return mapped


def colorize(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Train-id mask ``(H, W)`` -> ``(H, W, 3)`` uint8 RGB with the official :data:`PALETTE`; 255 (ignore) is
    black, as in the official ``_gtFine_color.png`` for void labels."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[:NUM_CLASSES] = PALETTE
    return colours[lookup(mask, TRAIN_ID_TO_TRAIN_ID, "colorize: mask must hold train ids 0..18 or 255")]


@overload
def train_id_to_label_id(mask: np.ndarray) -> np.ndarray: ...
@overload
def train_id_to_label_id(mask: torch.Tensor) -> torch.Tensor: ...
def train_id_to_label_id(mask: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Train ids -> Cityscapes label ids (255 -> 0), the space ``evalPixelLevelSemanticLabeling`` reads; returns
    the same type (numpy or torch) and shape as ``mask``, dtype uint8."""
    ids = lookup(mask, TRAIN_ID_TO_LABEL_ID, "train_id_to_label_id: mask must hold train ids 0..18 or 255")
    ids = ids.astype(np.uint8)
    return torch.from_numpy(ids) if isinstance(mask, torch.Tensor) else ids
