"""The Cityscapes semantic-segmentation loader: the file layout, checked once, and the dataset.

Layout (official release, ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``)::

    {root}/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png   RGB, 2048x1024
    {root}/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png    uint8 label ids
    {root}/gtFine/{split}/{city}/{same stem}_gtFine_labelTrainIds.png                 csCreateTrainIdLabelImgs

2975 train, 500 val and 1525 test images (test labels are withheld); city names contain no ``_``. Label ids become
train ids with the table in :mod:`anncore.data.labels`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from anncore.data.labels import LABEL_ID_TO_TRAIN_ID, TRAIN_ID_TO_TRAIN_ID, lookup
from anncore.data.transforms import val_transforms
from anncore.errors import BadInput, MissingInput
from anncore.progress import progress as shown

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX, LABEL_SUFFIXES = "_leftImg8bit.png", ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")


def _layout_error(message: str, root: Path, split: str) -> MissingInput:
    """``message`` followed by the layout the loader expects and where to get it, on one line."""
    stem = "{city}/{city}_{seq:06d}_{frame:06d}"
    return MissingInput(
        f"{message}; expected the Cityscapes layout {root}/leftImg8bit/{split}/{stem}_leftImg8bit.png with "
        f"{root}/gtFine/{split}/{stem}_gtFine_labelIds.png (or _gtFine_labelTrainIds.png); real data: log in at "
        "https://www.cityscapes-dataset.com and unzip leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into "
        "one folder (data/README.md); synthetic data: python -m anncore synth --out DIR"
    )


def _png_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from a PNG header (PIL reads only the header); raises naming the file if unreadable."""
    try:
        with Image.open(path) as png:
            if png.format != "PNG":
                raise ValueError(f"format {png.format}")
            return png.height, png.width
    except (OSError, ValueError) as err:
        raise BadInput(f"{path}: not a readable PNG ({err})") from err


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
        raise BadInput(f"split must be one of {SPLITS}, got {split!r}")
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
        shown = "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise _layout_error(f"{len(problems)} unpaired Cityscapes files in {root} ({split}): {shown}", root, split)
    samples = [(images[key], labels[key]) for key in sorted(images)]
    for image, label in samples:
        if _png_size(image) != _png_size(label):
            raise BadInput(f"{label}: label size {_png_size(label)} differs from image {image} {_png_size(image)}")
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
            raise BadInput(f"{label_path}: label size {label.shape} differs from image {image_path} {image.shape[:2]}")
        if label_path.name.endswith(LABEL_SUFFIXES[0]):
            table, expected = TRAIN_ID_TO_TRAIN_ID, "train ids 0..18 or 255"
        else:
            table, expected = LABEL_ID_TO_TRAIN_ID, "Cityscapes label ids 0..33"
        train_ids = lookup(label, table, f"{label_path}: expected {expected}").astype(np.uint8)
        return tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)), tv_tensors.Mask(torch.from_numpy(train_ids))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transforms(*self.load(index))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def bad_files(self, progress: bool = True) -> list[str]:
        """Decode every image and label once (what :meth:`load` does for a sample) and return one message per
        pair that fails, naming the file; ``[]`` when all decode. :func:`find_samples` reads only PNG headers, so a
        truncated file would otherwise surface mid-training."""

        problems = []
        for index in shown(range(len(self)), len(self), f"checking {self.split}", "image", enabled=progress):
            try:
                self.load(index)
            except BadInput as err:
                problems.append(str(err))
        return problems

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
        raise BadInput(f"{path}: cannot decode PNG ({err})") from err


def check_data(datasets: Sequence[CityscapesSegmentation], progress: bool = True) -> None:
    """Decode every file of ``datasets`` once; raise one :class:`~anncore.errors.BadInput` listing every bad file
    (``python -m anncore check-data``, ``train --check-data``)."""
    problems = [problem for dataset in datasets for problem in dataset.bad_files(progress)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BadInput(f"{len(problems)} bad Cityscapes files (unreadable, or holding ids out of range): {shown}")


def data_record(root: str | Path, datasets: Sequence[CityscapesSegmentation]) -> dict[str, Any]:
    """What a run reads, as its ``config.yaml``, ``metrics.json`` and checkpoint record it: ``{"root"`` (absolute),
    ``"<split>_images"`` per dataset, ``"fingerprint"}``. The fingerprint is one of the file list, cheap (no file is
    read): the first 16 hex digits of the SHA-256 of every image and label file's path relative to its dataset's
    root, sorted. It changes when a file is added, removed or renamed, and stays when the same files are moved
    elsewhere or a damaged file is repaired in place (a run stopped by an undecodable file resumes once it is
    fixed)."""
    root = Path(root).resolve()
    entries = sorted(
        f"{path.relative_to(dataset.root).as_posix()}\n"
        for dataset in datasets
        for pair in dataset.samples
        for path in pair
    )
    digest = hashlib.sha256("".join(entries).encode()).hexdigest()[:16]
    return {"root": str(root), **{f"{d.split}_images": len(d) for d in datasets}, "fingerprint": digest}


def describe_data(record: dict[str, Any], relative: bool = False) -> str:
    """A :func:`data_record` in words: ``/data/cityscapes (2975 train + 500 val images, fingerprint 1a2b...)``.

    ``relative``: the root relative to the working directory when it lies within its parent (``../data/...`` from a
    notebook), so that a run's start line names no machine path; the record itself keeps the absolute root."""
    counts = " + ".join(f"{n} {key.removesuffix('_images')}" for key, n in record.items() if key.endswith("_images"))
    root = str(record["root"])
    if relative:
        near = os.path.relpath(root)
        root = near if not near.startswith(os.path.join(os.pardir, os.pardir)) else root
    return f"{root} ({counts} images, fingerprint {record['fingerprint']})"
