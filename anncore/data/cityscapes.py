"""Cityscapes: the 19 train ids (names, colours, id lookups) and the semantic-segmentation loader.

Layout (official release, ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``)::

    {root}/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png   RGB, 2048x1024
    {root}/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png    uint8 label ids
    {root}/gtFine/{split}/{city}/{same stem}_gtFine_labelTrainIds.png                 csCreateTrainIdLabelImgs

2975 train, 500 val and 1525 test images (test labels are withheld); city names contain no ``_``.

The label table is torchvision's ``datasets.Cityscapes.classes``, a copy of the official
``cityscapesscripts.helpers.labels``: 34 label ids (plus ``license plate``, id -1, never in a PNG). The 19 evaluated
classes are the label ids 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, in that order
(train ids 0..18); every other label id maps to 255, ignored in training and evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.datasets import Cityscapes

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
    """``table[values]`` for integer ``values`` in 0..255; raises naming ``what`` and the bad values when a value
    is outside the table's domain (table entry -1)."""
    array = values.numpy(force=True) if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{what}: expected an integer array, got dtype {array.dtype}")
    inside = (array >= 0) & (array <= 255)
    mapped = np.full(array.shape, -1, dtype=np.int16)
    mapped[inside] = table[array[inside]]
    if (mapped < 0).any():
        bad = np.unique(array[mapped < 0])[:10].tolist()
        raise ValueError(f"{what}: values {bad} are not valid here")
    return mapped


def colorize(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Train-id mask ``(H, W)`` -> ``(H, W, 3)`` uint8 RGB with the official :data:`PALETTE`; 255 (ignore) is
    black, as in the official ``_gtFine_color.png`` for void labels."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[:NUM_CLASSES] = PALETTE
    return colours[lookup(mask, TRAIN_ID_TO_TRAIN_ID, "colorize: mask must hold train ids 0..18 or 255")]


def train_id_to_label_id(mask: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Train ids -> Cityscapes label ids (255 -> 0), the space ``evalPixelLevelSemanticLabeling`` reads; returns
    the same type (numpy or torch) and shape as ``mask``, dtype uint8."""
    ids = lookup(mask, TRAIN_ID_TO_LABEL_ID, "train_id_to_label_id: mask must hold train ids 0..18 or 255")
    ids = ids.astype(np.uint8)
    return torch.from_numpy(ids) if isinstance(mask, torch.Tensor) else ids


SPLITS = ("train", "val", "test")
IMAGE_SUFFIX, LABEL_SUFFIXES = "_leftImg8bit.png", ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")


def _layout_error(message: str, root: Path, split: str) -> FileNotFoundError:
    """``message`` followed by the layout the loader expects and where to get it."""
    stem = "{city}/{city}_{seq:06d}_{frame:06d}"
    return FileNotFoundError(
        f"{message}\nexpected the Cityscapes layout:\n"
        f"  {root}/leftImg8bit/{split}/{stem}_leftImg8bit.png\n"
        f"  {root}/gtFine/{split}/{stem}_gtFine_labelIds.png  (or _gtFine_labelTrainIds.png)\n"
        "Real data: log in at https://www.cityscapes-dataset.com and unzip leftImg8bit_trainvaltest.zip and "
        "gtFine_trainvaltest.zip into one folder (data/README.md). Synthetic data: python -m anncore synth --out DIR"
    )


def _png_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from a PNG header (PIL reads only the header); raises naming the file if unreadable."""
    try:
        with Image.open(path) as png:
            if png.format != "PNG":
                raise ValueError(f"format {png.format}")
            return png.height, png.width
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable PNG ({err})") from err


def _by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    """``{city}/{city}_{seq}_{frame}`` -> path, for the files ``folder/{city}/*{suffix}``."""
    return {f"{p.parent.name}/{p.name.removesuffix(suffix)}": p for p in folder.glob(f"*/*{suffix}")}


def find_samples(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Pair every ``leftImg8bit`` image of ``split`` with its ``gtFine`` label (``labelTrainIds`` when present,
    else ``labelIds``), sorted by path, after checking the layout once: the folders exist, every image has a label
    in the same city folder and every label an image, and each pair's PNG headers are readable and of equal size.
    Raises ``FileNotFoundError`` (layout) or ``ValueError`` (a file), naming what is wrong and where."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for folder in (root, root / "leftImg8bit" / split, root / "gtFine" / split):
        if not folder.is_dir():
            raise _layout_error(f"Cityscapes folder missing: {folder}", root, split)
    images = _by_stem(root / "leftImg8bit" / split, IMAGE_SUFFIX)
    if not images:
        raise _layout_error(f"no {{city}}/*{IMAGE_SUFFIX} files in {root / 'leftImg8bit' / split}", root, split)
    labels = _by_stem(root / "gtFine" / split, LABEL_SUFFIXES[1]) | _by_stem(root / "gtFine" / split, LABEL_SUFFIXES[0])
    problems = [f"image without label: {images[key]} (no {root / 'gtFine' / split / key}{LABEL_SUFFIXES[1]})"
                for key in sorted(images.keys() - labels.keys())]  # fmt: skip
    problems += [f"label without image: {labels[key]}" for key in sorted(labels.keys() - images.keys())]
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise _layout_error(f"{len(problems)} unpaired Cityscapes files in {root} ({split}):\n  {shown}", root, split)
    samples = [(images[key], labels[key]) for key in sorted(images)]
    for image, label in samples:
        if _png_size(image) != _png_size(label):
            raise ValueError(f"{label}: label size {_png_size(label)} differs from image {image} {_png_size(image)}")
    return samples


class CityscapesSegmentation(torch.utils.data.Dataset):
    """Cityscapes semantic segmentation: ``(image, mask)`` pairs, ``image`` float32 ``(3, H, W)`` after
    ``transforms`` (default :func:`~anncore.data.transforms.val_transforms`: ImageNet-normalised), ``mask`` int64
    ``(H, W)`` with train ids 0..18 and 255 for ignore.

    Reads ``_gtFine_labelTrainIds.png`` when present, else maps ``_gtFine_labelIds.png`` through the 19-class lookup
    (:data:`LABEL_ID_TO_TRAIN_ID`). The file list is built and checked once, here (:func:`find_samples`), instead of
    through ``torchvision.datasets.Cityscapes``, whose listing is unsorted and unchecked and which fails with a
    generic message; a test checks that both list the same pairs. PNGs are decoded with PIL, as torchvision's
    dataset does (``torchvision.io``'s image decoders are deprecated since 0.29 in favour of TorchCodec).
    ``transforms`` is called as ``transforms(tv_tensors.Image, tv_tensors.Mask)``, the ``transforms.v2`` protocol.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        from anncore.data.transforms import val_transforms  # here: that module imports IGNORE_INDEX from this one

        self.root, self.split = Path(root), split
        self.samples = find_samples(self.root, split)
        self.transforms = val_transforms() if transforms is None else transforms

    def __len__(self) -> int:
        return len(self.samples)

    def image_id(self, index: int) -> str:
        """``{city}_{seq}_{frame}``, the stem the official evaluation matches predictions by."""
        return self.samples[index][0].name.removesuffix(IMAGE_SUFFIX)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """The untransformed pair: image uint8 ``(3, H, W)`` RGB, mask uint8 ``(H, W)`` train ids (255 ignore)."""
        image_path, label_path = self.samples[index]
        image, label = _read_png(image_path, "RGB"), _read_png(label_path, "L")
        if label.shape != image.shape[:2]:
            raise ValueError(
                f"{label_path}: label size {label.shape} differs from image {image_path} {image.shape[:2]}"
            )
        if label_path.name.endswith(LABEL_SUFFIXES[0]):
            table, expected = TRAIN_ID_TO_TRAIN_ID, "train ids 0..18 or 255"
        else:
            table, expected = LABEL_ID_TO_TRAIN_ID, "Cityscapes label ids 0..33"
        train_ids = lookup(label, table, f"{label_path}: expected {expected}").astype(np.uint8)
        return tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)), tv_tensors.Mask(torch.from_numpy(train_ids))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transforms(*self.load(index))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def extra_repr(self) -> str:
        return f"root={self.root}, split={self.split}, {len(self)} images"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _read_png(path: Path, mode: str) -> np.ndarray:
    """Decode a PNG of PIL ``mode`` (``RGB`` image, ``L`` 8-bit label) to a writable array, naming the file when
    it cannot be decoded or is a label of another mode (Cityscapes label PNGs are 8-bit grey)."""
    try:
        with Image.open(path) as png:
            if mode == "L" and png.mode != "L":
                raise ValueError(f"expected a single-channel 8-bit label PNG, got PIL mode {png.mode}")
            return np.array(png.convert(mode))
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot decode PNG ({err})") from err
