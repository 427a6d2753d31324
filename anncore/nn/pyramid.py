"""Pyramid sampling (paper Sec. 3.2, official ``PSPModule``) and its exact linear form.

APNB and AFNB do not attend to all ``N = H*W`` key/value positions but to ``S`` anchors: the projected key and
value maps are adaptive-average-pooled to ``1x1, 3x3, 6x6, 8x8`` grids, each flattened row-major, and concatenated in
that order, giving ``S = 1 + 9 + 36 + 64 = 110`` anchors whatever the input size.

Because average pooling is linear, sampling is a fixed matrix ``P`` of shape ``(S, N)``: ``P[j, p] = 1/|cell_j|`` if
pixel ``p`` lies in anchor ``j``'s pooling cell, else 0. :func:`pooling_matrix` builds it from the real cell bounds
that ``torch.nn.AdaptiveAvgPool2d`` uses (cells overlap when the size does not divide ``H`` or ``W``, and repeat
pixels when the map is smaller than the grid). :func:`effective_attention` uses it to turn anchor weights into the
per-pixel weights of the equivalent non-local block: ``w_p = sum_j a_j / |cell_j|``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import torch
import torch.nn.functional as F

DEFAULT_POOL_SIZES: tuple[int, ...] = (1, 3, 6, 8)


def check_pool_sizes(pool_sizes: Sequence[int]) -> tuple[int, ...]:
    """Validate a pyramid: a non-empty sequence of positive ints; returns it as a tuple."""
    sizes = tuple(pool_sizes)
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"pool_sizes must be a non-empty sequence of positive ints, got {pool_sizes!r}")
    return sizes


def num_anchors(pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES) -> int:
    """``S = sum(s*s)``: 110 for the paper's ``(1, 3, 6, 8)``."""
    return sum(s * s for s in check_pool_sizes(pool_sizes))


def pyramid_pool(x: torch.Tensor, pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES) -> torch.Tensor:
    """Sample ``x: (B, C, H, W)`` into ``(B, C, S)`` anchors (official ``PSPModule.forward``)."""
    if x.dim() != 4:
        raise ValueError(f"pyramid_pool expects (B, C, H, W), got shape {tuple(x.shape)}")
    sizes = check_pool_sizes(pool_sizes)
    return torch.cat([F.adaptive_avg_pool2d(x, s).flatten(2) for s in sizes], dim=2)


def cell_bounds(length: int, bins: int) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` of each adaptive-pooling bin along one axis, as PyTorch computes them:
    ``start = floor(i * L / n)``, ``end = ceil((i + 1) * L / n)``."""
    return [(math.floor(i * length / bins), math.ceil((i + 1) * length / bins)) for i in range(bins)]


def pooling_matrix(
    height: int,
    width: int,
    pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``(S, H*W)`` matrix ``P`` with ``pyramid_pool(x) == x.flatten(2) @ P.T``, built from cell bounds."""
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} of the sampled feature map must be a positive int, got {value!r}")
    rows = []
    for s in check_pool_sizes(pool_sizes):
        for h0, h1 in cell_bounds(height, s):
            for w0, w1 in cell_bounds(width, s):
                cell = torch.zeros(height, width, dtype=dtype, device=device)
                cell[h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
                rows.append(cell.flatten())
    return torch.stack(rows)


def effective_attention(
    anchor_weights: torch.Tensor,
    height: int,
    width: int,
    pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
) -> torch.Tensor:
    """Per-pixel attention of the non-local block that APNB/AFNB is exactly equal to.

    Args:
        anchor_weights: ``(..., S)`` softmax weights over the anchors (e.g. ``(B, N, S)`` from a block's
            ``return_attention=True``).
        height, width: the size of the key/value feature map that was sampled (for AFNB: the low level).
        pool_sizes: the pyramid the weights came from.

    Returns:
        ``(..., height*width)`` weights ``w_p = sum_j a_j / |cell_j|``; each row sums to one like the anchors do,
        and ``w @ V_pixels`` equals the block's context ``a @ pyramid_pool(V)``.

    The rows (second-last dim) are queries of the ``height x width`` map itself (APNB's queries are its pixels;
    AFNB's high level has the low level's size), all of them or a chosen few: more rows than ``height*width`` is
    refused, as the sign of a wrong ``height, width`` (a block's ``(B, 64, S)`` of an 8x8 map given as 5x7).
    """
    expected = num_anchors(pool_sizes)
    if anchor_weights.shape[-1] != expected:
        raise ValueError(
            f"anchor_weights has {anchor_weights.shape[-1]} anchors in its last dim, but pool_sizes "
            f"{tuple(pool_sizes)} give {expected}"
        )
    pool = pooling_matrix(height, width, pool_sizes, dtype=anchor_weights.dtype, device=anchor_weights.device)
    queries = anchor_weights.shape[-2] if anchor_weights.dim() >= 2 else 1
    if queries > height * width:
        raise ValueError(
            f"anchor_weights has {queries} query rows but a {height}x{width} map has only {height * width} pixels: "
            "height and width must be those of the sampled feature map (a whole map's rows number height*width)"
        )
    return anchor_weights @ pool
