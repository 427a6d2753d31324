"""Interactive views for notebooks (ipywidgets): :class:`AttentionExplorer`, where a query pixel looks in NL, APNB
and AFNB.

Everything shown is computed by the pure functions of :mod:`anncore.course.viz`; this module only wires them to widgets.
The maps are rendered to PNG directly from numpy (:func:`anncore.course.viz.attention_overlay`) rather than through
matplotlib, so a slider move costs the block's projections plus a few milliseconds of drawing; ``last_update_ms``
says how long the last one took. :meth:`AttentionExplorer.figure` draws the current view as a static matplotlib
figure, for notebooks read without a kernel.

Query pixels are chosen with the row/column sliders (cells of the stride-8 feature grid) or, where the optional
``ipyevents`` package is installed, by clicking the attention image.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from anncore.analysis.probe import CapturedAttention, capture_attention, cell_centre, image_to_cell, pixel_attention
from anncore.course.viz import anchor_grids, anchor_level_maps, attention_overlay, plot_query_attention
from anncore.data.labels import colorize
from anncore.data.transforms import denormalize
from anncore.nn.pyramid import DEFAULT_POOL_SIZES

IMAGE_CLASS = "ann-attention-image"  # CSS classes, so a browser test can find the elements
ANCHOR_CLASS = "ann-anchor-image"
PREDICTION_CLASS = "ann-prediction-image"
ROW_CLASS, COL_CLASS = "ann-query-row", "ann-query-col"
DISPLAY_WIDTH = 512  # pixels: images narrower than this are enlarged by an integer factor
#: pixels: wider images are drawn subsampled by an integer factor (a 2048-wide Cityscapes frame at 1024, so that a
#: slider move stays under 100 ms on a 2-core CPU; each 8-pixel feature cell still covers 4 screen pixels)
DISPLAY_MAX_WIDTH = 1024


class SegmentationSamples(Protocol):
    """What the explorer reads images from: ``samples[i] -> (image (3, H, W) ImageNet-normalised, mask (H, W))``,
    e.g. :class:`anncore.data.CityscapesSegmentation` with its default validation transforms."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class ImageCapture:
    """One image's forward: the picture, its label and prediction (train ids), and the captured blocks."""

    image: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    blocks: dict[str, CapturedAttention]


@dataclass(frozen=True)
class QueryView:
    """What the explorer shows: one block's attention for one query cell of one image.

    ``anchor_weights`` is ``(S,)`` for APNB/AFNB and ``None`` for a non-local block; ``pixel_map`` is ``(h, w)``
    over the key map (:func:`anncore.analysis.probe.pixel_attention`).
    """

    image_index: int
    block: str
    cell: tuple[int, int]
    anchor_weights: torch.Tensor | None
    pixel_map: torch.Tensor


def _png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 array (fast zlib level: this runs on every slider move)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class AttentionExplorer:
    """Choose an image, a block and a query pixel; see where that pixel takes its context from (NL, APNB, AFNB).

    Args:
        model: a segmentation network with NL/APNB/AFNB blocks (e.g. :func:`anncore.models.loading.load_model`'s
            :class:`~anncore.models.network.ANN`), on any device; it is put in eval mode. Its output may be a logits
            tensor or a dict with ``"out"`` logits at the input size.
        samples: where images come from (:class:`SegmentationSamples`).
        indices: which samples the image menu offers (default: the first ten).
        names: menu names of those samples (default: ``samples.image_id(i)`` when it exists, else ``image i``).
        continuous_update: update while a slider is dragged (set ``False`` for a large model on a CPU).
        zoom: integer factor the images are enlarged by for display (default: the smallest that makes them at
            least :data:`DISPLAY_WIDTH` pixels wide), so small synthetic images are not blurred by the browser.
        without_pyramid: also offer each APNB/AFNB with its pyramid removed
            (:meth:`anncore.analysis.probe.CapturedAttention.without_pyramid`: the non-local block with the same trained
            projections), to compare the two on one query.

    Widgets: a menu of images and one of blocks (``AFNB``, ``APNB``, ``NL``: those the model has), row and column
    sliders for the query cell, the image with the block's per-pixel attention (CSS class ``ann-attention-image``),
    the anchor weights on each pyramid level's grid (``ann-anchor-image``; APNB/AFNB only) and the prediction next
    to the label (``ann-prediction-image``). Display it as a notebook cell's value. Changing the image runs one
    forward; moving the query only recomputes the chosen row (:meth:`anncore.analysis.probe.CapturedAttention.rows`).
    """

    def __init__(
        self,
        model: nn.Module,
        samples: SegmentationSamples,
        indices: Sequence[int] | None = None,
        names: Sequence[str] | None = None,
        continuous_update: bool = True,
        zoom: int | None = None,
        without_pyramid: bool = False,
    ) -> None:
        if zoom is not None and (not isinstance(zoom, int) or zoom < 1):
            raise ValueError(f"zoom must be a positive int or None, got {zoom!r}")
        self.model = model.eval()
        self.zoom = zoom
        self.without_pyramid = without_pyramid
        self.samples = samples
        self.indices = list(range(min(10, len(samples)))) if indices is None else list(indices)
        if not self.indices or not all(0 <= i < len(samples) for i in self.indices):
            raise ValueError(
                f"indices must be a non-empty list of sample indices in [0, {len(samples)}), got {indices}"
            )
        if names is None:
            image_id = getattr(samples, "image_id", None)
            names = [image_id(i) if image_id else f"image {i}" for i in self.indices]
        if len(names) != len(self.indices):
            raise ValueError(f"names must give one name per index ({len(self.indices)}), got {len(names)}")
        self.last_update_ms = float("nan")
        self._capture: ImageCapture | None = None
        self._quiet = False  # set while several controls change at once, so the view is drawn once

        self.image_menu = widgets.Dropdown(options=list(zip(names, self.indices, strict=True)), description="image")
        self.block_menu = widgets.Dropdown(options=[], description="block")
        slider = {"continuous_update": continuous_update, "style": {"description_width": "initial"}}
        self.row_slider = widgets.IntSlider(value=0, min=0, max=0, description="query row", **slider)
        self.col_slider = widgets.IntSlider(value=0, min=0, max=0, description="query col", **slider)
        self.row_slider.add_class(ROW_CLASS)
        self.col_slider.add_class(COL_CLASS)
        self.attention_image = widgets.Image(format="png")
        self.attention_image.add_class(IMAGE_CLASS)
        self.anchor_image = widgets.Image(format="png")
        self.anchor_image.add_class(ANCHOR_CLASS)
        self.prediction_image = widgets.Image(format="png")
        self.prediction_image.add_class(PREDICTION_CLASS)
        self.info = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.image_menu, self.block_menu]),
                widgets.HBox([self.row_slider, self.col_slider]),
                self.info,
                self.attention_image,
                self.anchor_image,
                self.prediction_image,
            ]
        )
        self.clicks = self._listen_to_clicks()
        self.image_menu.observe(lambda _: self._load_image(), names="value")
        for control in (self.block_menu, self.row_slider, self.col_slider):
            control.observe(lambda _: self._refresh(), names="value")
        self._load_image()

    # ------------------------------------------------------------------------------------------------ state
    @property
    def capture(self) -> ImageCapture:
        """The current image's forward (cached until another image is chosen)."""
        if self._capture is None:
            raise RuntimeError("no image captured yet")  # unreachable after __init__
        return self._capture

    @property
    def cell(self) -> tuple[int, int]:
        """The query cell ``(row, col)`` on the chosen block's query grid."""
        return self.row_slider.value, self.col_slider.value

    def select(
        self, image: int | None = None, block: str | None = None, cell: tuple[int, int] | None = None
    ) -> QueryView:
        """Set the controls from code (``image``: a sample index from ``indices``) and return the new view."""
        if image is not None:
            if image not in self.indices:
                raise ValueError(f"image must be one of the explorer's sample indices {self.indices}, got {image}")
            self.image_menu.value = image
        self._quiet = True
        try:
            if block is not None:
                if block not in self.capture.blocks:
                    raise ValueError(f"block must be one of {list(self.capture.blocks)}, got {block!r}")
                self.block_menu.value = block
            if cell is not None:
                h, w = self.capture.blocks[self.block_menu.value].query_size
                if not (0 <= cell[0] < h and 0 <= cell[1] < w):
                    raise ValueError(f"cell must be (row, col) on the {h}x{w} query grid, got {cell}")
                self.row_slider.value, self.col_slider.value = cell
        finally:
            self._quiet = False
        return cast(QueryView, self._refresh())  # not None: the controls are no longer being set

    def view(self) -> QueryView:
        """The current view's numbers, from :class:`anncore.analysis.probe.CapturedAttention` (nothing cached)."""
        captured = self.capture.blocks[self.block_menu.value]
        weights = captured.rows([self.cell])[0, 0]
        pixel_map = pixel_attention(weights, captured.key_size, captured.pool_sizes)
        anchors = None if captured.pool_sizes is None else weights
        return QueryView(self.image_menu.value, self.block_menu.value, self.cell, anchors, pixel_map)

    def figure(self) -> Figure:
        """The current view as a static figure (:func:`anncore.course.viz.plot_query_attention`)."""
        view = self.view()
        captured = self.capture.blocks[view.block]
        return plot_query_attention(
            self.capture.image,
            view.pixel_map,
            view.cell,
            view.anchor_weights,
            captured.pool_sizes or DEFAULT_POOL_SIZES,
            captured.query_size,
            f"{view.block} ({self.image_menu.label})",
        )

    # ------------------------------------------------------------------------------------------- updates
    def _load_image(self) -> None:
        index = self.image_menu.value
        image, label = self.samples[index]
        device = _model_device(self.model)
        output, blocks = capture_attention(self.model, image.unsqueeze(0).to(device))
        logits = output["out"] if isinstance(output, dict) else output
        prediction = logits.argmax(1)[0].cpu().numpy()
        if self.without_pyramid:
            pyramids = [block for block in blocks.values() if block.pool_sizes is not None]
            blocks.update({plain.name: plain for plain in (block.without_pyramid() for block in pyramids)})
        self._capture = ImageCapture(denormalize(image), label.cpu().numpy(), prediction, blocks)
        shown = self._enlarged(self._capture.image)
        self._display_image = (shown, shown.mean(axis=2, keepdims=True, dtype=np.float32) / np.float32(255.0))
        self.prediction_image.value = _png(self._enlarged(np.concatenate([colorize(prediction), colorize(label)], 1)))
        self._quiet = True
        try:
            previous = self.block_menu.value
            self.block_menu.options = list(blocks)
            self.block_menu.value = previous if previous in blocks else next(iter(blocks))
        finally:
            self._quiet = False
        self._refresh()

    def _refresh(self) -> QueryView | None:
        """Redraw the view for the current controls; returns it (``None`` while controls are being set)."""
        if self._quiet:
            return None
        start = time.perf_counter()
        captured = self.capture.blocks[self.block_menu.value]
        self._quiet = True  # blocks may differ in grid size: fit the sliders (clamping the query) first
        try:
            self.row_slider.max, self.col_slider.max = captured.query_size[0] - 1, captured.query_size[1] - 1
        finally:
            self._quiet = False
        view = self.view()
        image, grey = self._display_image
        overlay = attention_overlay(image, view.pixel_map, view.cell, captured.query_size, grey=grey)
        self.attention_image.value = _png(overlay)
        levels = "non-local block: every pixel is a key, there are no anchors"
        if view.anchor_weights is not None:
            small, small_grey = image[::2, ::2], grey[::2, ::2]  # the four levels side by side at half size
            sizes = cast("tuple[int, ...]", captured.pool_sizes)  # anchor weights exist only with a pyramid
            peak = float(view.anchor_weights.max())
            maps = anchor_level_maps(view.anchor_weights, captured.key_size, sizes)
            tiles = [attention_overlay(small, m, view.cell, captured.query_size, vmax=peak, grey=small_grey)
                     for m in maps]  # fmt: skip
            gap = np.full((small.shape[0], 4, 3), 255, np.uint8)
            self.anchor_image.value = _png(np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1))
            shares = [grid.sum() for grid in anchor_grids(view.anchor_weights, sizes)]
            levels = "anchor levels " + ", ".join(f"{s}x{s}: {v:.0%}" for s, v in zip(sizes, shares, strict=True))
        self.anchor_image.layout.display = None if view.anchor_weights is not None else "none"
        self.last_update_ms = 1000 * (time.perf_counter() - start)
        y, x = cell_centre(*view.cell, self.capture.image.shape[:2], captured.query_size)
        h, w = captured.query_size
        self.info.value = (
            f"<b>{view.block}</b>, query cell ({view.cell[0]}, {view.cell[1]}) of {h}x{w} = image pixel "
            f"({int(y)}, {int(x)}); peak weight {float(view.pixel_map.max()):.2g} "
            f"(uniform {1 / view.pixel_map.numel():.2g}); {levels}; updated in {self.last_update_ms:.0f} ms"
        )
        return view

    def _scale(self) -> float:
        """Display pixels per image pixel: ``zoom``, or the smallest integer enlargement reaching
        :data:`DISPLAY_WIDTH`, or ``1 / k`` for the smallest integer ``k`` that fits :data:`DISPLAY_MAX_WIDTH`."""
        width = self.capture.image.shape[1]
        if self.zoom:
            return float(self.zoom)
        if width > DISPLAY_MAX_WIDTH:
            return 1.0 / -(-width // DISPLAY_MAX_WIDTH)
        return float(max(1, -(-DISPLAY_WIDTH // width)))

    def _enlarged(self, picture: np.ndarray) -> np.ndarray:
        """``picture`` at the display scale: pixel repetition (cells stay crisp) or subsampling."""
        scale = self._scale()
        if scale < 1:
            step = round(1 / scale)
            return picture[::step, ::step]
        return picture.repeat(int(scale), axis=0).repeat(int(scale), axis=1)

    def _listen_to_clicks(self) -> Any:
        """Clicks on the attention image choose the query, through ``ipyevents`` when it is installed (``None``
        otherwise: the sliders always work)."""
        try:
            from ipyevents import Event
        except ImportError:
            return None
        events = Event(source=self.attention_image, watched_events=["click"])
        events.on_dom_event(self.click)
        return events

    def click(self, event: dict[str, Any]) -> None:
        """Choose the query cell under an ``ipyevents`` click (``dataX``/``dataY``: pixel coordinates in the
        displayed, zoomed image)."""
        captured, scale = self.capture.blocks[self.block_menu.value], self._scale()
        y, x = event["dataY"] / scale, event["dataX"] / scale
        cell = image_to_cell(y, x, self.capture.image.shape[:2], captured.query_size)
        self.select(cell=cell)

    # ------------------------------------------------------------------------------------------- display
    def __repr__(self) -> str:
        return f"AttentionExplorer({len(self.indices)} images, blocks {list(self.capture.blocks)})"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget for a notebook, with a plain-text form that does not change between runs (nbval)."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle
