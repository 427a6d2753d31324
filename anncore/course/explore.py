"""The attention explorer on your own photos, from the command line: ``python -m anncore explore``.

``python -m anncore explore --checkpoint CK photo.jpg ... --out DIR`` builds the same
:class:`~anncore.course.widgets.AttentionExplorer` that notebook 09 shows, on the photos instead of validation images,
and writes its static figure (:meth:`~anncore.course.widgets.AttentionExplorer.figure`: where one query pixel looks,
per block, with the anchor levels) for a few query cells of every block of every photo. In Jupyter, build the explorer
from :func:`photo_samples` and move the query with the sliders. The checkpoint may be the course model (``course``), a
training run, or a converted official or mmsegmentation checkpoint (:mod:`anncore.models.convert`); photos are fed as
every tool here feeds images (RGB, ImageNet-normalised; the model converts them to what its weights expect).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from anncore.course.widgets import AttentionExplorer
from anncore.data.labels import IGNORE_INDEX
from anncore.data.transforms import val_transforms
from anncore.device import pick_device
from anncore.errors import BadInput, MissingInput
from anncore.models.loading import load_model
from anncore.outputs import fresh_output


def photo_samples(paths: Sequence[str | Path], max_side: int = 2048) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(image, label)`` pairs of photos for the explorer: ImageNet-normalised RGB, the longer side at most
    ``max_side`` pixels (Cityscapes frames are 2048 wide), and a label of ignored pixels (a photo has none)."""
    if not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 1:
        raise BadInput(f"--max-side must be a number of pixels >= 1, got {max_side!r}")
    samples = []
    for path in map(Path, paths):
        if not path.is_file():
            raise MissingInput(f"photo {path} does not exist")
        try:
            with Image.open(path) as photo:
                rgb = photo.convert("RGB")
        except OSError as err:
            raise BadInput(f"{path}: not an image PIL can read ({err})") from err
        scale = min(1.0, max_side / max(rgb.size))
        if scale < 1.0:
            rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BILINEAR)
        image = tv_tensors.Image(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.full(image.shape[-2:], IGNORE_INDEX, dtype=torch.uint8))
        normalised, label = val_transforms()(image, mask)
        samples.append((normalised.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor)))
    return samples


def query_cells(size: tuple[int, int], per_side: int = 2) -> list[tuple[int, int]]:
    """``per_side`` x ``per_side`` query cells spread evenly over a ``(h, w)`` grid (cell centres of equal parts)."""
    h, w = size
    return [(int((2 * i + 1) * h / (2 * per_side)), int((2 * j + 1) * w / (2 * per_side)))
            for i in range(per_side) for j in range(per_side)]  # fmt: skip


#: The largest ``--cells`` accepted unless ``max_cells`` (``--max-cells``) says otherwise: ``N x N`` figures per block
#: and photo, each about a second to draw, so 16 is already 512 figures for one photo of the two-block ANN.
MAX_CELLS = 16


def check_cells(per_side: int, max_cells: int = MAX_CELLS) -> None:
    """Refuse, before any work, a ``per_side`` (``--cells``) that is not a positive int or is above ``max_cells``."""
    if not isinstance(per_side, int) or isinstance(per_side, bool) or per_side < 1:
        raise BadInput(f"--cells must be a number of query cells per side >= 1, got {per_side!r}")
    if per_side > max_cells:
        raise BadInput(
            f"--cells {per_side} would draw {per_side * per_side} figures per block and photo (about a second "
            f"each); at most --max-cells {max_cells} are drawn unless you raise it (--max-cells {per_side})"
        )


def explore_photos(
    checkpoint: str | Path,
    photos: Sequence[str | Path],
    out: str | Path,
    per_side: int = 2,
    device: str = "auto",
    max_side: int = 2048,
    max_cells: int = MAX_CELLS,
    overwrite: bool = False,
) -> list[Path]:
    """Write the explorer's figure for ``per_side``^2 query cells of every block of every photo into ``out``;
    returns the files (``{photo}_{block}_{row}_{col}.png``).

    ``per_side`` must be in ``[1, max_cells]`` (:func:`check_cells`, before the model is loaded) and at most the
    side of every block's query grid (checked for each photo before its figures are drawn: more cells than grid
    rows or columns would repeat cells). ``out`` is a folder of its own (:func:`~anncore.outputs.fresh_output`:
    refused when it holds files, unless ``overwrite`` replaces an earlier exploration's figures)."""
    check_cells(per_side, max_cells)
    model = load_model(checkpoint, map_location=pick_device(device))
    samples = photo_samples(photos, max_side)
    explorer = AttentionExplorer(model, samples, indices=range(len(samples)), names=[Path(p).stem for p in photos])
    with fresh_output(out, "--out", overwrite, ("*_*_[0-9]*_[0-9]*.png",)) as folder:  # {photo}_{block}_{row}_{col}
        return _draw(explorer, photos, per_side, folder)


def _draw(explorer: AttentionExplorer, photos: Sequence[str | Path], per_side: int, out: Path) -> list[Path]:
    """The figures of :func:`explore_photos`, into ``out``."""
    from matplotlib.figure import Figure

    written = []
    for index, photo in enumerate(photos):
        explorer.select(image=index)
        for block, captured in explorer.capture.blocks.items():
            if per_side > min(captured.query_size):
                h, w = captured.query_size
                raise BadInput(
                    f"--cells {per_side}: the {block} query grid of {photo} is {h}x{w}, so at most --cells "
                    f"{min(h, w)} (more would repeat cells)"
                )
        for block, captured in explorer.capture.blocks.items():
            for cell in query_cells(captured.query_size, per_side):
                explorer.select(block=block, cell=cell)
                figure: Figure = explorer.figure()
                name = f"{Path(photo).stem}_{block.replace(' ', '-')}_{cell[0]}_{cell[1]}.png"
                figure.savefig(out / name, dpi=100)
                written.append(out / name)
    return written
