"""Looking inside the blocks: what attention a model computes, without changing how it computes it.

* :func:`capture_attention` records the inputs of every NL/APNB/AFNB block during an ordinary forward (hooks, the
  model's code path unchanged) and :class:`CapturedAttention` recomputes the weights of chosen query pixels from them
  in ``O(N)`` memory; :func:`pixel_attention` turns them into per-pixel maps (APNB's anchors through the exact
  non-local form, :func:`anncore.nn.pyramid.effective_attention`) and :func:`region_mass` measures where they go.
* A query pixel of the image and its cell on the stride-8 feature grid are related by :func:`image_to_cell` and
  :func:`cell_centre`.
* For untrained blocks: :func:`with_visible_attention` gives a fresh block a non-zero ``W`` (in place, the one
  function here that edits weights), :func:`image_features` transparent hand-made features of an image and
  :func:`class_queries` a typical query pixel per class.

The figures drawn from these live in :mod:`anncore.course.viz`, the interactive explorer in
:mod:`anncore.course.widgets`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anncore.nn.attention import attention_weights
from anncore.nn.blocks import AFNB, APNB, NonLocal2d, SelfAttention2d
from anncore.nn.pyramid import effective_attention

ArrayLike = np.ndarray | torch.Tensor
#: The blocks :func:`capture_attention` records, and the names it gives them.
BLOCK_NAMES: dict[type[nn.Module], str] = {AFNB: "AFNB", APNB: "APNB", NonLocal2d: "NL"}


def to_float64(x: ArrayLike) -> np.ndarray:
    """A float64 numpy copy of a tensor (any device, any dtype) or array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()  # on the CPU first: MPS has no float64
    return np.asarray(x, dtype=np.float64)


def with_visible_attention(block: nn.Module, seed: int = 0) -> nn.Module:
    """Put a fresh ``NonLocal2d``/``APNB``/``AFNB`` in eval mode with random ``W`` and BN statistics, in place.

    A fresh block's output conv ``W`` is zero (official ``_SelfAttentionBlock`` init), so its attention contributes
    nothing and any attention, right or wrong, gives the same output; its BN running statistics are 0 and 1, so BN is
    nearly the identity. Checks of a from-scratch block against the library, and pictures of a block's output, need
    both to be non-trivial: ``W`` gets ``N(0, 0.5^2)`` entries, running means ``U(-0.5, 0.5)``, running variances
    ``U(0.5, 1.5)``, drawn on the CPU from ``seed`` (so the values do not depend on the block's device).

    Returns:
        ``block`` itself.
    """
    generator = torch.Generator().manual_seed(seed)
    output_conv = cast(SelfAttention2d, block.attention).W  # every block keeps its attention branch there
    with torch.no_grad():
        # W is built with a bias, and the blocks' BatchNorms track running statistics: none of these is None
        for param in (output_conv.weight, cast(torch.Tensor, output_conv.bias)):
            param.copy_(0.5 * torch.randn(param.shape, generator=generator))
        for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
            cast(torch.Tensor, bn.running_mean).copy_(torch.rand(bn.num_features, generator=generator) - 0.5)
            cast(torch.Tensor, bn.running_var).copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
    return block.eval()


def image_features(image: np.ndarray, stride: int = 8, position_weight: float = 1.0) -> torch.Tensor:
    """Hand-made per-pixel features of an RGB image at ``1/stride`` resolution, for showing attention mechanics.

    Each pixel gets ``[R, G, B]`` standardised over the image, followed by its ``[y, x]`` coordinates in
    ``[-1, 1]`` times ``position_weight``; the map is average-pooled by ``stride`` (like a backbone at output
    stride 8) and every feature vector is L2-normalised, so the dot product of two of them is their cosine
    similarity and ``softmax(beta * q . k)`` is a Gaussian kernel in this feature space (Wang et al. 2018, Eq. 2,
    "Gaussian" instance of ``f``). A trained network learns its embeddings; these are only transparent stand-ins.

    Args:
        image: ``(H, W, 3)`` uint8 or float RGB image; ``H`` and ``W`` are floored to multiples of ``stride``.
        stride: pooling factor.
        position_weight: how much position counts against colour (0: colour only).

    Returns:
        ``(1, 5, H // stride, W // stride)`` float32 tensor of unit-norm feature vectors.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if image.shape[0] < stride or image.shape[1] < stride:
        raise ValueError(f"image {image.shape[:2]} is smaller than one {stride}x{stride} stride cell")
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
    rgb = (rgb - rgb.mean(dim=(1, 2), keepdim=True)) / rgb.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    height, width = image.shape[:2]
    ys = torch.linspace(-1.0, 1.0, height).view(height, 1).expand(height, width)
    xs = torch.linspace(-1.0, 1.0, width).view(1, width).expand(height, width)
    features = torch.cat([rgb, position_weight * torch.stack([ys, xs])]).unsqueeze(0)
    return F.normalize(F.avg_pool2d(features, stride), dim=1)


def class_queries(
    labels: np.ndarray, classes: Sequence[int], features: ArrayLike | None = None
) -> dict[int, tuple[int, int]]:
    """One query position per class present in ``labels``: its most typical pixel.

    Without ``features`` that is the pixel of the class nearest the class's centroid (so it lies inside the class
    even when the region is not convex). With ``features`` it is the pixel whose feature vector is nearest the
    class's mean feature, which avoids atypical pixels such as lane markings, labelled road but painted white.

    Args:
        labels: ``(h, w)`` integer class map, e.g. train ids sampled at the feature grid's cell centres.
        classes: class ids to find, in the order the result should have; absent ones are left out.
        features: optional ``(C, h, w)`` (or ``(1, C, h, w)``) features on the same grid.

    Returns:
        class id -> ``(row, col)``.
    """
    if features is not None:
        feats = to_float64(features).reshape(-1, *labels.shape)
        points = feats.reshape(len(feats), -1).T  # (h*w, C)
    else:
        rows, cols = np.indices(labels.shape)
        points = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
    found = {}
    for cls in classes:
        (members,) = np.nonzero(labels.ravel() == cls)
        if members.size:
            typical = members[np.argmin(((points[members] - points[members].mean(0)) ** 2).sum(1))]
            found[cls] = (int(typical // labels.shape[1]), int(typical % labels.shape[1]))
    return found


def image_to_cell(y: float, x: float, image_size: tuple[int, int], feature_size: tuple[int, int]) -> tuple[int, int]:
    """The feature-grid cell ``(row, col)`` that image pixel ``(y, x)`` falls in.

    The ``(h, w)`` grid divides the ``(H, W)`` image into equal blocks (a stride-8 backbone: ``H = 8 h``), so
    ``row = floor(y h / H)``, clamped to the grid; the inverse of :func:`cell_centre`.
    """
    (height, width), (h, w) = image_size, feature_size
    if not (0 <= y < height and 0 <= x < width):
        raise ValueError(f"(y, x) must lie inside the {height}x{width} image, got ({y}, {x})")
    return min(h - 1, int(y * h // height)), min(w - 1, int(x * w // width))


def cell_centre(row: int, col: int, image_size: tuple[int, int], feature_size: tuple[int, int]) -> tuple[float, float]:
    """Image coordinates ``(y, x)`` of the centre of feature cell ``(row, col)``, as :func:`plot_attention_maps`
    marks its queries: ``((row + 0.5) H / h, (col + 0.5) W / w)``."""
    (height, width), (h, w) = image_size, feature_size
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"(row, col) must be a cell of the {h}x{w} feature grid, got ({row}, {col})")
    return (row + 0.5) * height / h, (col + 0.5) * width / w


def pixel_attention(weights: torch.Tensor, key_size: tuple[int, int], pool_sizes: Sequence[int] | None) -> torch.Tensor:
    """Attention rows ``(..., S)`` as per-pixel maps ``(..., h, w)`` over the ``key_size`` key/value map.

    A non-local row (``pool_sizes=None``, ``S = h w``) is reshaped; APNB/AFNB anchor weights become the weights of
    the non-local block they equal, ``w_p = sum_j a_j / |cell_j|`` (:func:`anncore.nn.pyramid.effective_attention`,
    paper Sec. 3.3).
    """
    h, w = key_size
    maps = weights if pool_sizes is None else effective_attention(weights, h, w, pool_sizes)
    if maps.shape[-1] != h * w:
        raise ValueError(f"weights must have {h * w} keys (a {h}x{w} map) in their last dim, got {maps.shape[-1]}")
    return maps.reshape(*maps.shape[:-1], h, w)


@dataclass(frozen=True)
class CapturedAttention:
    """What one attention block received in a forward: its attention branch and its ``(low, high)`` inputs.

    Made by :func:`capture_attention`. :meth:`rows` computes the softmax weights of chosen query cells from the
    recorded inputs, projected once (:attr:`projected`), so a new query costs ``O(Q S)`` time and memory (``O(N)``
    per query for the non-local block), never a forward of the model nor a projection.

    Attributes:
        name: ``"AFNB"``, ``"APNB"`` or ``"NL"`` (with the module's path when a model has several of one kind).
        attention: the block's :class:`~anncore.nn.blocks.SelfAttention2d`.
        low: ``(B, C_low, h, w)`` keys/values input (``high`` itself for APNB and NL).
        high: ``(B, C_high, h, w)`` queries input.
    """

    name: str
    attention: SelfAttention2d
    low: torch.Tensor
    high: torch.Tensor

    @property
    def pool_sizes(self) -> tuple[int, ...] | None:
        """The pyramid of the keys, ``None`` for the non-local block (every pixel is a key)."""
        return self.attention.pool_sizes

    @property
    def query_size(self) -> tuple[int, int]:
        """``(h, w)`` of the query grid."""
        return int(self.high.shape[-2]), int(self.high.shape[-1])

    @property
    def key_size(self) -> tuple[int, int]:
        """``(h, w)`` of the key/value map (before pyramid sampling)."""
        return int(self.low.shape[-2]), int(self.low.shape[-1])

    def rows(self, cells: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Softmax weights ``(B, Q, S)`` of the query cells ``(row, col)`` over the ``S`` keys (110 anchors, or
        ``N`` pixels for NL), on the CPU in float32. The branch runs in eval mode (BN running statistics), whatever
        mode the model is in now."""
        h, w = self.query_size
        outside = [cell for cell in cells if not (0 <= cell[0] < h and 0 <= cell[1] < w)]
        if not cells or outside:
            raise ValueError(f"cells must be a non-empty list of (row, col) on the {h}x{w} query grid, got {cells}")
        queries, keys = self.projected
        with torch.no_grad():
            weights = attention_weights(queries[:, torch.as_tensor([r * w + c for r, c in cells])], keys)
        return weights.float().cpu()

    @cached_property
    def projected(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries of every pixel and the keys (:meth:`anncore.nn.blocks.SelfAttention2d.project`), computed once, in
        eval mode: the projections are the costly part (a 1x1 conv over 2048 channels for AFNB at full resolution),
        so a new query after the first costs one ``(1, Ck) x (Ck, S)`` product and a softmax."""
        training = self.attention.training
        self.attention.eval()
        try:
            with torch.no_grad():
                return self.attention.project(self.low, self.high)
        finally:
            self.attention.train(training)

    def pixel_maps(self, cells: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Per-pixel attention ``(B, Q, h, w)`` of the query cells over the key map (:func:`pixel_attention`)."""
        return pixel_attention(self.rows(cells), self.key_size, self.pool_sizes)

    def without_pyramid(self) -> CapturedAttention:
        """The same block with its trained projections but no pyramid sampling: the non-local block that attends
        to every pixel with the queries and keys this block learned (an asymmetric one for AFNB). Its maps show
        what the 110 anchors summarise; it is a lens, not a network that was trained."""
        if self.pool_sizes is None:
            raise ValueError(f"{self.name} has no pyramid to remove (pool_sizes is None)")
        attention = copy.deepcopy(self.attention)  # keeps f_query is f_key where they are shared
        attention.pool_sizes = None
        return CapturedAttention(f"{self.name} without pyramid", attention, self.low, self.high)


def capture_attention(model: nn.Module, *inputs: torch.Tensor) -> tuple[Any, dict[str, CapturedAttention]]:
    """Run ``model(*inputs)`` in eval mode (and leave it there) without gradients, recording every NL/APNB/AFNB
    block's inputs.

    Forward pre-hooks on the blocks' :class:`~anncore.nn.blocks.SelfAttention2d` branches store the ``(low, high)``
    tensors they are called with and are removed afterwards, so the forward is the model's own (any attention path,
    fused SDPA included, which returns no weights). Works on an :class:`~anncore.models.network.ANN` (its blocks are
    ``model.head.blocks()``) and on a bare block alike.

    Returns:
        ``(output, blocks)``: the model's output and ``name -> CapturedAttention`` in the order the blocks ran.
    """
    found = [(path, module) for path, module in model.named_modules() if type(module) in BLOCK_NAMES]
    if not found:
        raise ValueError(f"model ({type(model).__name__}) has no AFNB, APNB or NonLocal2d block to capture")
    kinds = [type(module) for _, module in found]
    records: dict[str, CapturedAttention] = {}
    handles = []
    for path, module in found:
        name = BLOCK_NAMES[type(module)]
        if kinds.count(type(module)) > 1:
            name = f"{name} ({path})"

        def record(branch: nn.Module, args: tuple, name: str = name) -> None:
            low = args[0].detach()
            high = low if args[1] is args[0] else args[1].detach()  # APNB and NL: one tensor, kept as one
            records[name] = CapturedAttention(name, cast(SelfAttention2d, branch), low, high)

        handles.append(module.attention.register_forward_pre_hook(record))
    model.eval()
    try:
        with torch.no_grad():
            output = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return output, records


def region_mass(maps: ArrayLike, mask: np.ndarray) -> np.ndarray:
    """How much attention falls on an image region: ``sum_p w_p * coverage_p`` for maps ``(..., h, w)`` and a
    boolean ``(H, W)`` image mask, ``coverage_p`` being the fraction of feature cell ``p``'s image block inside the
    region. Compare with ``mask.mean()``, the region's share of the image, which uniform attention would give."""
    weights = to_float64(maps)
    h, w = weights.shape[-2:]
    region = np.asarray(mask, dtype=np.float64)
    if region.ndim != 2 or region.shape[0] < h or region.shape[1] < w:
        raise ValueError(f"mask must be an (H, W) image mask at least as large as the {h}x{w} maps, got {region.shape}")
    coverage = F.adaptive_avg_pool2d(torch.from_numpy(region)[None, None], (h, w))[0, 0].numpy()
    return (weights * coverage).sum(axis=(-2, -1))
