"""Plotting helpers for the course: pyramid grids, attention maps, costs and tensor shapes.

Size (~620 lines): every figure of the notebooks, as pure functions sharing one colour map, one colour-bar rule and
one set of small helpers; splitting them by notebook would copy those.

Every ``plot_*`` function is pure: it builds a new :class:`matplotlib.figure.Figure` (not registered with pyplot, so a
notebook shows it exactly once, as the cell's value) and returns it. Every ``draw_*`` function draws onto an
``Axes`` it is given (or a new one) and returns that ``Axes``, so notebooks can compose panels. Nothing here changes
global matplotlib state.

Conventions, shared with :mod:`anncore.nn.pyramid`:

* a feature map is ``(H, W)``; pixel ``(r, c)`` is drawn centred on data coordinates ``(x=c, y=r)``;
* attention weights are ``(N, S)`` rows (``N = H*W`` queries, row-major); ``S = N`` for the non-local block and
  ``S = 110`` anchors for APNB/AFNB (pyramid sampling, official ``PSPModule``), ordered level by level, each level
  row-major;
* an anchor's pooling cell is the real ``AdaptiveAvgPool2d`` cell from :func:`anncore.nn.pyramid.cell_bounds`, so
  overlapping cells (size not divisible by the grid) are drawn as they are, overlapping.

What is plotted is computed in :mod:`anncore.analysis.probe` (captured attention of a trained model, hand-made features,
blocks with visible attention); :func:`attention_overlay` and :func:`anchor_level_maps` render it as arrays (fast
enough for a slider, for :mod:`anncore.course.widgets`), :func:`plot_query_attention` and :func:`plot_prediction` as
figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle

from anncore.analysis.probe import ArrayLike, cell_centre, to_float64
from anncore.data.labels import CLASS_NAMES, IGNORE_INDEX, PALETTE, colorize
from anncore.nn.pyramid import (
    DEFAULT_POOL_SIZES,
    cell_bounds,
    check_pool_sizes,
    num_anchors,
    pyramid_pool,
)

ATTENTION_CMAP = "magma"


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    return ax if ax is not None else Figure(figsize=figsize, layout="constrained").add_subplot()


def _outline_mask(outline: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``outline`` as a float mask for ``contour``, refused unless it is ``shape`` (the image's ``(H, W)``)."""
    region = np.asarray(outline, dtype=float)
    if region.shape != shape:
        raise ValueError(f"outline must be an (H, W) = {shape} mask, got shape {region.shape}")
    return region


def _opacity(weights: np.ndarray, peak: float, alpha: float) -> np.ndarray | float:
    """Opacity of an attention map drawn over an image: ``alpha`` at ``peak``, ``alpha * sqrt(weight / peak)``
    below it (the image shows through where attention is low), 0 everywhere for an all-zero map."""
    return alpha * np.sqrt(np.clip(weights / peak, 0.0, 1.0)) if peak > 0 else 0.0


def anchor_grids(values: ArrayLike, pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES) -> list[np.ndarray]:
    """Split ``S`` per-anchor values (e.g. one query's anchor weights) into one ``(s, s)`` grid per pyramid level,
    undoing the level-by-level, row-major flattening of :func:`anncore.nn.pyramid.pyramid_pool`."""
    flat = to_float64(values).reshape(-1)
    sizes = check_pool_sizes(pool_sizes)
    if flat.size != num_anchors(sizes):
        raise ValueError(f"got {flat.size} anchor values, but pool_sizes {sizes} give {num_anchors(sizes)}")
    offsets = np.cumsum([0, *(s * s for s in sizes)])
    return [flat[start:end].reshape(s, s) for s, start, end in zip(sizes, offsets[:-1], offsets[1:], strict=True)]


def draw_pyramid_grid(
    ax: Axes, height: int, width: int, bins: int, color: str = "white", linewidth: float = 1.2
) -> Axes:
    """Outline the ``bins x bins`` adaptive-average-pooling cells of an ``(height, width)`` map on ``ax``.

    One rectangle per cell, from the real cell bounds, so cells that overlap (size not divisible by ``bins``) are
    seen to overlap. Pixel ``(r, c)`` is centred at ``(c, r)``, matching ``ax.imshow`` of the map.
    """
    for h0, h1 in cell_bounds(height, bins):
        for w0, w1 in cell_bounds(width, bins):
            ax.add_patch(
                Rectangle((w0 - 0.5, h0 - 0.5), w1 - w0, h1 - h0, fill=False, edgecolor=color, linewidth=linewidth)
            )
    return ax


def draw_anchor_grid(
    ax: Axes,
    grid: np.ndarray,
    title: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = "{:.3g}",
) -> Axes:
    """Show one pyramid level's ``(s, s)`` anchor values as a heatmap, each cell annotated with ``fmt`` when
    ``s <= 3``."""
    ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax)
    if grid.shape[0] <= 3:
        for (r, c), value in np.ndenumerate(grid):
            ax.text(c, r, fmt.format(value), ha="center", va="center", color="white", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_pyramid_sampling(
    feature_map: ArrayLike, pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES, cmap: str = "viridis"
) -> Figure:
    """Pyramid sampling of one ``(H, W)`` feature channel (official ``PSPModule``), one column per level.

    Top row: the map with that level's pooling cells drawn over it. Bottom row: the ``s x s`` anchors that
    average pooling makes of it (computed by :func:`anncore.nn.pyramid.pyramid_pool`). The suptitle counts the anchors.
    """
    fmap = to_float64(feature_map)
    if fmap.ndim != 2:
        raise ValueError(f"feature_map must be (H, W), got shape {fmap.shape}")
    sizes = check_pool_sizes(pool_sizes)
    height, width = fmap.shape
    anchors = pyramid_pool(torch.from_numpy(fmap)[None, None], sizes)[0, 0]
    fig = Figure(figsize=(3.2 * len(sizes), 5.2), layout="constrained")
    axes = fig.subplots(2, len(sizes), squeeze=False)
    vmin, vmax = fmap.min(), fmap.max()
    for col, (s, grid) in enumerate(zip(sizes, anchor_grids(anchors, sizes), strict=True)):
        top = axes[0, col]
        top.imshow(fmap, cmap=cmap, vmin=vmin, vmax=vmax)
        draw_pyramid_grid(top, height, width, s)
        top.set_title(f"{s}x{s} grid over the {height}x{width} map", fontsize=9)
        top.set_xticks([])
        top.set_yticks([])
        label = f"{s * s} anchor{'s' if s > 1 else ''} (cell means)"
        draw_anchor_grid(axes[1, col], grid, label, cmap, vmin, vmax)
    fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), ax=axes, shrink=0.8, label="feature value")
    fig.suptitle(f"pyramid sampling: {' + '.join(str(s * s) for s in sizes)} = {num_anchors(sizes)} anchors")
    return fig


def plot_anchor_weights(
    anchor_weights: ArrayLike,
    pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
    title: str = "anchor weights a_j of one query",
) -> Figure:
    """One query's softmax weights over the ``S`` anchors, shown level by level on one colour scale (0 to the
    largest weight); each title gives the level's share of the total weight (the shares sum to one)."""
    sizes = check_pool_sizes(pool_sizes)
    grids = anchor_grids(anchor_weights, sizes)
    peak = max(grid.max() for grid in grids)
    fig = Figure(figsize=(2.6 * len(sizes), 2.8), layout="constrained")
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, s, grid in zip(axes, sizes, grids, strict=True):
        level = f"{s}x{s}: {grid.sum():.1%} of the weight"
        draw_anchor_grid(ax, grid, level, ATTENTION_CMAP, vmin=0.0, vmax=peak, fmt="{:.1%}")
    fig.colorbar(ScalarMappable(Normalize(0.0, peak), ATTENTION_CMAP), ax=axes, shrink=0.8, label="anchor weight a_j")
    fig.suptitle(title)
    return fig


def query_class_names(
    labels: ArrayLike, queries: Sequence[tuple[int, int]], feature_size: tuple[int, int] | None = None
) -> list[str]:
    """The class (:data:`anncore.data.CLASS_NAMES`) under each query cell, to title attention maps by what the
    query looks at from ("road", "car") rather than by its coordinates.

    ``labels`` holds train ids, either on the feature grid or at any finer resolution (e.g. the image's): query
    ``(row, col)`` of the ``feature_size`` grid (default: the labels' own shape) reads the label at its cell's centre,
    ``((row + 0.5) H_l / h, (col + 0.5) W_l / w)``, the pixel :func:`plot_attention_maps` marks. Ignored pixels
    (255) and ids outside the 19 classes are named ``"ignored"``.
    """
    grid = to_float64(labels).astype(np.int64)
    if grid.ndim != 2:
        raise ValueError(f"labels must be an (H, W) map of train ids, got shape {grid.shape}")
    h, w = feature_size or grid.shape
    names = []
    for row, col in queries:
        y, x = cell_centre(row, col, grid.shape, (h, w))
        train_id = int(grid[int(y), int(x)])
        names.append(CLASS_NAMES[train_id] if 0 <= train_id < len(CLASS_NAMES) else "ignored")
    return names


def _query_titles(
    queries: Sequence[tuple[int, int]],
    titles: Sequence[str] | None,
    labels: ArrayLike | None,
    feature_size: tuple[int, int],
) -> list[str] | None:
    """Per-query titles: ``titles`` as given, else ``"<class> query"`` from ``labels``, else ``None`` (coordinates)."""
    if titles is not None:
        if len(titles) != len(queries):
            raise ValueError(f"got {len(titles)} titles for {len(queries)} queries")
        return [str(t) for t in titles]
    if labels is not None:
        return [f"{name} query" for name in query_class_names(labels, queries, feature_size)]
    return None


def plot_attention_maps(
    maps: Mapping[str, ArrayLike],
    queries: Sequence[tuple[int, int]],
    image: np.ndarray | None = None,
    alpha: float = 0.75,
    titles: Sequence[str] | None = None,
    labels: ArrayLike | None = None,
    outline: np.ndarray | None = None,
) -> Figure:
    """Attention maps of a few query pixels: one row per query and one column per kind of map, or, for a single
    kind, the queries side by side under the map's name.

    Args:
        maps: column title -> ``(Q, h, w)`` weights of each query over the ``h x w`` key positions (a row of the
            attention matrix reshaped, or :func:`anncore.nn.pyramid.effective_attention` for APNB/AFNB).
        queries: ``Q`` query positions ``(row, col)`` on the ``h x w`` grid, marked with a cyan cross.
        image: optional ``(H, W, 3)`` image the maps are drawn over, in grey so that the colour map reads (each map
            cell becomes a block of the image).
        alpha: opacity of the map at its peak over the image; elsewhere the opacity is
            ``alpha * sqrt(weight / peak)``, so the image shows through where attention is low.
        titles: optional name of each query (e.g. ``"road query"``), used instead of ``"query (row, col)"``; the
            cell's coordinates then move under the panel, next to its peak.
        labels: optional train-id map (feature grid or image resolution); without ``titles``, each query is named
            by the class under it (:func:`query_class_names`), ``"<class> query"``.
        outline: optional boolean mask of a region (e.g. the synthetic set's cue board) outlined in lime on every
            panel, at the image's resolution (the maps' ``(h, w)`` without ``image``).

    Each panel has its own colour scale from 0 to its peak weight, shown by its colour bar and given under it: maps
    of different blocks differ in sharpness, and a shared scale would hide the flatter one.
    """
    arrays = {name: to_float64(m) for name, m in maps.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[0] != len(queries):
        raise ValueError(f"every map must be (Q={len(queries)}, h, w) with the same shape; got {shapes}")
    _, h, w = next(iter(shapes))
    names = _query_titles(queries, titles, labels, (h, w))
    height, width = (h, w) if image is None else image.shape[:2]
    extent = (0, width, height, 0)
    region = None if outline is None else _outline_mask(outline, (height, width))
    grey = None if image is None else np.asarray(image, dtype=np.float64).mean(axis=2)
    single = len(arrays) == 1
    nrows, ncols = (1, len(queries)) if single else (len(queries), len(arrays))
    fig = Figure(figsize=(3.2 * ncols, 1.0 + 3.2 * nrows * height / width), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for row, (qr, qc) in enumerate(queries):
        for col, (name, weights) in enumerate(arrays.items()):
            ax = axes[0, row] if single else axes[row, col]
            peak = weights[row].max()
            opacity = None
            if grey is not None:
                ax.imshow(grey, cmap="gray", extent=extent)
                opacity = _opacity(weights[row], peak, alpha)
            ax.imshow(
                weights[row],
                cmap=ATTENTION_CMAP,
                vmin=0.0,
                vmax=peak,
                alpha=opacity,
                extent=extent,
                interpolation="nearest",
            )
            if region is not None:  # contour at pixel centres, in the extent's coordinates
                ax.contour(np.arange(width) + 0.5, np.arange(height) + 0.5, region, levels=[0.5], colors="lime")
            ax.plot((qc + 0.5) * width / w, (qr + 0.5) * height / h, "x", color="cyan", markersize=10, mew=2.5)
            bar = fig.colorbar(ScalarMappable(Normalize(0.0, peak), ATTENTION_CMAP), ax=ax, shrink=0.85, pad=0.02)
            bar.ax.tick_params(labelsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            query_name = f"query ({qr}, {qc})" if names is None else names[row]
            where = "" if names is None else f"cell ({qr}, {qc}), "
            ax.set_xlabel(f"{where}peak {peak:.2g}", fontsize=8)
            if single:
                ax.set_title(query_name, fontsize=10)
                fig.suptitle(name)
            else:
                if row == 0:
                    ax.set_title(name, fontsize=10)
                if col == 0:
                    ax.set_ylabel(query_name)
    return fig


def draw_attention_matrix(
    weights: ArrayLike,
    rows: Sequence[int] = (),
    ax: Axes | None = None,
    log: bool = True,
    title: str = "",
    row_labels: Sequence[str] = (),
) -> Axes:
    """The ``(N, S)`` attention matrix as an image (the non-local block's ``N x N`` or APNB/AFNB's ``N x S``), with
    the given query rows marked by cyan lines, each named by its entry of ``row_labels`` (if given) at the line's
    left end. ``log`` uses a log colour scale over six decades below the peak, since softmax rows span orders of
    magnitude."""
    matrix = to_float64(weights)
    if matrix.ndim != 2:
        raise ValueError(f"weights must be (N, S), got shape {matrix.shape}")
    ax = _new_axes(ax, (5, 5))
    norm = LogNorm(vmin=matrix.max() * 1e-6, vmax=matrix.max(), clip=True) if log else None
    shown = ax.imshow(matrix, cmap=ATTENTION_CMAP, norm=norm, aspect="auto", interpolation="antialiased")
    ax.figure.colorbar(shown, ax=ax, label="attention weight" + (" (log scale)" if log else ""))
    if row_labels and len(row_labels) != len(rows):
        raise ValueError(f"row_labels must name each of the {len(rows)} rows, got {len(row_labels)}")
    for k, row in enumerate(rows):
        ax.axhline(row, color="cyan", linewidth=1.0)
        if row_labels:
            ax.text(0.01 * matrix.shape[1], row, row_labels[k], color="cyan", fontsize=8, va="bottom")
    ax.set_xlabel(f"key position j  (S = {matrix.shape[1]})")
    ax.set_ylabel(f"query position i  (N = {matrix.shape[0]})")
    ax.set_title(title or f"attention matrix {matrix.shape[0]} x {matrix.shape[1]}", fontsize=10)
    return ax


def draw_scaling(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    references: Mapping[str, float] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Log-log curves of a cost against a size (e.g. bytes of the attention matrix against ``N``), one per series,
    with optional horizontal reference lines (e.g. a GPU's memory) labelled at the left."""
    ax = _new_axes(ax, (6, 4))
    for name, values in series.items():
        if len(values) != len(x):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(x)} x positions")
        ax.loglog(x, values, "o-", label=name)
    for name, level in (references or {}).items():
        ax.axhline(level, color="grey", linestyle="--", linewidth=1)
        ax.text(x[0], level, f" {name}", va="top", color="grey", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return ax


def draw_cost_bars(
    costs: Mapping[str, Mapping[str, float]], unit: str, ax: Axes | None = None, log: bool = False
) -> Axes:
    """Horizontal bars comparing blocks: ``costs[block][component]`` stacked per block (e.g. FLOPs of projections,
    attention core and fusion), each bar labelled with its total in ``unit``.

    ``log=True`` is only allowed with one component per block, since stacked segments cannot be read on a log axis.
    """
    components = list(dict.fromkeys(c for parts in costs.values() for c in parts))
    if log and len(components) > 1:
        raise ValueError(f"log scale needs a single component per block, got {components}")
    ax = _new_axes(ax, (8, 1.2 + 0.6 * len(costs)))
    blocks = list(costs)
    left = np.zeros(len(blocks))
    for component in components:
        values = np.array([costs[b].get(component, 0.0) for b in blocks])
        ax.barh(blocks, values, left=left, label=component)
        left += values
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:,.4g} {unit}", va="center", fontsize=9)
    if log:
        ax.set_xscale("log")
    ax.set_xlim(right=left.max() * (30 if log else 1.3))
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    if len(components) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return ax


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(d)) for d in shape)


def shapes_table(columns: Mapping[str, Mapping[str, Sequence[int]]], bytes_per_element: int = 4) -> pd.DataFrame:
    """Tensor shapes through a network for several inputs: one row per stage, and per input a shape column
    (``1×2048×97×97``) and its size in MiB at ``bytes_per_element`` (4 for fp32).

    Args:
        columns: input label (e.g. ``"769×769 crop"``) -> ordered stage name -> shape. Stages missing for an input
            are left empty.
    """
    stages = list(dict.fromkeys(stage for shapes in columns.values() for stage in shapes))
    table = pd.DataFrame(index=pd.Index(stages, name="stage"))
    for label, shapes in columns.items():
        table[label] = [_shape_text(shapes[s]) if s in shapes else "" for s in stages]
        table[f"{label} MiB"] = [
            round(float(np.prod(shapes[s])) * bytes_per_element / 2**20, 1) if s in shapes else np.nan for s in stages
        ]
    return table


def plot_shape_flow(
    stages: Sequence[tuple[str, Sequence[int]]],
    highlight: Sequence[str] = (),
    side_inputs: Sequence[tuple[str, str, str]] = (),
    title: str = "",
) -> Figure:
    """A network as a top-down chain of boxes, each naming a stage and the shape of its output.

    Args:
        stages: ``(name, output shape)`` in execution order; consecutive stages are joined by arrows.
        highlight: stage names drawn in colour (e.g. ``AFNB``, ``APNB``).
        side_inputs: extra ``(from_stage, to_stage, label)`` edges, drawn as labelled arcs on the right (e.g.
            ``("layer3", "AFNB", "keys, values")``).
        title: figure title.
    """
    names = [name for name, _ in stages]
    unknown = [n for *edge, _ in side_inputs for n in edge if n not in names] + [n for n in highlight if n not in names]
    if unknown:
        raise ValueError(f"unknown stage names {unknown}; stages are {names}")
    fig = Figure(figsize=(6.5, 0.3 + 0.62 * len(stages)), layout="constrained")
    ax = fig.add_subplot()
    box_w, box_h = 0.8, 0.6
    for i, (name, shape) in enumerate(stages):
        colour = "#f4a261" if name in highlight else "#e9f1f7"
        ax.add_patch(
            FancyBboxPatch(
                (-box_w / 2, -i - box_h / 2),
                box_w,
                box_h,
                boxstyle="round,pad=0.02",
                facecolor=colour,
                edgecolor="#264653",
            )
        )
        ax.text(-box_w / 2 + 0.03, -i, name, va="center", ha="left", fontsize=9, fontweight="bold")
        ax.text(box_w / 2 - 0.03, -i, _shape_text(shape), va="center", ha="right", fontsize=9, family="monospace")
        if i:
            ax.add_patch(
                FancyArrowPatch((0, -i + 1 - box_h / 2), (0, -i + box_h / 2), arrowstyle="-|>", mutation_scale=10)
            )
    for source, target, label in side_inputs:
        i, j = names.index(source), names.index(target)
        ax.add_patch(
            FancyArrowPatch(
                (box_w / 2, -i),
                (box_w / 2, -j),
                arrowstyle="-|>",
                mutation_scale=12,
                connectionstyle="arc3,rad=-0.6",
                color="#e76f51",
                linewidth=1.5,
            )
        )
        ax.text(box_w / 2 + 0.2 * (j - i) ** 0.5, -(i + j) / 2, label, va="center", fontsize=8, color="#e76f51")
    ax.set_xlim(-box_w / 2 - 0.05, box_w / 2 + 0.35)
    ax.set_ylim(-len(stages) + 0.4, 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------------- attention of a trained model


def anchor_level_maps(
    anchor_weights: ArrayLike, feature_size: tuple[int, int], pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES
) -> list[np.ndarray]:
    """One query's anchor weights drawn on their grids: per pyramid level an ``(h, w)`` map whose pixels hold the
    weight ``a_j`` of the level's pooling cell that contains them (real cell bounds; where adaptive cells overlap,
    the later cell in row-major order is shown)."""
    h, w = feature_size
    sizes = check_pool_sizes(pool_sizes)
    levels = []
    for s, grid in zip(sizes, anchor_grids(anchor_weights, sizes), strict=True):
        level = np.zeros((h, w))
        for i, (h0, h1) in enumerate(cell_bounds(h, s)):
            for j, (w0, w1) in enumerate(cell_bounds(w, s)):
                level[h0:h1, w0:w1] = grid[i, j]
        levels.append(level)
    return levels


QUERY_COLOUR = (0, 255, 255)  # cyan, as the markers of plot_attention_maps


def attention_overlay(
    image: np.ndarray,
    weights: ArrayLike,
    query: tuple[int, int] | None = None,
    query_size: tuple[int, int] | None = None,
    vmax: float | None = None,
    alpha: float = 0.75,
    grey: np.ndarray | None = None,
) -> np.ndarray:
    """An ``(h, w)`` attention map over an ``(H, W, 3)`` image as an ``(H, W, 3)`` uint8 RGB array, computed in
    numpy in milliseconds (what a slider can afford; :func:`plot_query_attention` shows these arrays, and
    :func:`plot_attention_maps` draws the same blend with matplotlib layers).

    The image is shown in grey; each map cell covers its block of the image in :data:`ATTENTION_CMAP` colours from 0
    to ``vmax`` (default: the map's peak) with the opacity of :func:`plot_attention_maps`. ``query`` (a cell of the
    ``query_size`` grid, default the map's grid) is marked with a cyan cross at its centre. ``grey``: the image's
    ``(H, W, 1)`` float32 grey levels in ``[0, 1]``, when the caller has them (a slider redraws one image often).
    """
    rgb = np.asarray(image)
    values = to_float64(weights)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or values.ndim != 2:
        raise ValueError(f"image must be (H, W, 3) and weights (h, w), got {rgb.shape} and {values.shape}")
    (height, width), (h, w) = rgb.shape[:2], values.shape
    peak = float(values.max()) if vmax is None else vmax
    colour = colormaps[ATTENTION_CMAP](np.clip(values / peak, 0.0, 1.0) if peak > 0 else values * 0)[..., :3]
    opacity = np.broadcast_to(_opacity(values, peak, alpha), values.shape)[..., None]
    # colour the h x w cells first, then give every image pixel its cell's colour (nearest, as imshow draws them);
    # float32 throughout: this runs on every slider move, over millions of pixels
    rows, cols = (np.arange(height) * h // height)[:, None], (np.arange(width) * w // width)[None, :]
    if grey is None:
        grey = rgb.mean(axis=2, keepdims=True, dtype=np.float32) / np.float32(255.0)
    keep = (1.0 - opacity).astype(np.float32)[rows, cols]
    paint = (colour * opacity).astype(np.float32)[rows, cols]
    out = (np.float32(255.0) * (grey * keep + paint) + np.float32(0.5)).astype(np.uint8)
    if query is not None:
        y, x = cell_centre(*query, (height, width), query_size or (h, w))
        _draw_cross(out, int(y), int(x), max(4, min(height, width) // 40))
    return out


def _draw_cross(rgb: np.ndarray, y: int, x: int, size: int) -> None:
    """A diagonal cross (the ``x`` marker) of half-width ``size`` in :data:`QUERY_COLOUR`, 3 pixels thick, in place."""
    offsets = np.arange(-size, size + 1)
    for thickness in (-1, 0, 1):
        for sign in (1, -1):
            rows, cols = y + offsets, x + sign * offsets + thickness
            inside = (rows >= 0) & (rows < rgb.shape[0]) & (cols >= 0) & (cols < rgb.shape[1])
            rgb[rows[inside], cols[inside]] = QUERY_COLOUR


def plot_query_attention(
    image: np.ndarray,
    pixel_map: ArrayLike,
    query: tuple[int, int],
    anchor_weights: ArrayLike | None = None,
    pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
    query_size: tuple[int, int] | None = None,
    name: str = "",
    outline: np.ndarray | None = None,
    query_name: str = "",
    labels: ArrayLike | None = None,
) -> Figure:
    """Where one query pixel looks, in one block: the per-pixel map over the image and, for APNB/AFNB, the anchor
    weights ``a_j`` on each pyramid level's grid.

    Args:
        image: ``(H, W, 3)`` image.
        pixel_map: ``(h, w)`` per-pixel weights over the key map (a non-local row, or APNB/AFNB's effective map
            ``w = a P`` from :func:`pixel_attention`).
        query: the query's cell on the ``query_size`` grid (default: the map's grid), marked with a cyan cross.
        anchor_weights: the query's ``S`` anchor weights, or ``None`` for a non-local block (no second row).
        pool_sizes: the pyramid the anchors come from.
        name: the block's name, for the titles.
        outline: optional boolean ``(H, W)`` image mask of a region to outline in lime on every panel (e.g. the
            synthetic set's cue board).
        query_name: optional name of the query (e.g. ``"car query"``) for the image panel's title, before its cell.
        labels: optional train-id map (the ``query_size`` grid or image resolution); without ``query_name``, the
            query is named by the class under it (:func:`query_class_names`).

    The top row is the image and the per-pixel map (own scale, 0 to its peak). The bottom row has one panel per
    level: each cell of the level's (real, sometimes overlapping) grid coloured by its anchor weight, all levels on
    one scale (0 to the largest ``a_j``), titled with the level's share of the weight.
    """
    values = to_float64(pixel_map)
    height, width = np.asarray(image).shape[:2]
    h, w = values.shape
    sizes = check_pool_sizes(pool_sizes)
    columns = len(sizes) if anchor_weights is not None else 2
    rows = [2, 1] if anchor_weights is not None else [2]  # panel widths: half the figure on top, 1/columns below
    fig = Figure(figsize=(13.0, 1.0 + 13.0 / 2 * height / width * sum(rows) / 2), layout="constrained")
    grid = fig.add_gridspec(len(rows), 2 * columns, height_ratios=rows)
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # data coordinates = key-map cells, as draw_pyramid_grid expects
    qy, qx = cell_centre(*query, (height, width), query_size or (h, w))
    top = [fig.add_subplot(grid[0, :columns]), fig.add_subplot(grid[0, columns:])]
    top[0].imshow(image)
    top[0].plot(qx, qy, "x", color="cyan", markersize=10, mew=2.5)
    named = _query_titles([query], [query_name] if query_name else None, labels, query_size or (h, w))
    cell = f"{named[0]}, cell" if named else "query cell"
    top[0].set_title(f"{cell} {query} (image pixel {int(qy)}, {int(qx)})", fontsize=9)
    top[1].imshow(attention_overlay(image, values), extent=extent)
    kind = "per-pixel weights" if anchor_weights is None else "effective per-pixel weights w = aP"
    top[1].set_title(f"{name}: {kind}".lstrip(": "), fontsize=9)
    top[1].set_xlabel(f"peak {values.max():.2g} (uniform would be {1 / values.size:.2g})", fontsize=8)
    panels = list(top)
    if anchor_weights is not None:
        anchors = to_float64(anchor_weights).reshape(-1)
        peak = float(anchors.max())
        for col, (s, level) in enumerate(zip(sizes, anchor_level_maps(anchors, (h, w), sizes), strict=True)):
            ax = fig.add_subplot(grid[1, 2 * col : 2 * col + 2])
            ax.imshow(attention_overlay(image, level, vmax=peak), extent=extent)
            draw_pyramid_grid(ax, h, w, s, color="white", linewidth=0.6)
            share = anchor_grids(anchors, sizes)[col].sum()
            ax.set_title(f"{s}x{s} anchors: {share:.1%} of the weight", fontsize=9)
            panels.append(ax)
        fig.colorbar(ScalarMappable(Normalize(0.0, peak), ATTENTION_CMAP), ax=panels[2:], label="anchor weight a_j")
    fig.colorbar(ScalarMappable(Normalize(0.0, values.max()), ATTENTION_CMAP), ax=top[1], label="weight w_p")
    for ax in panels:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in panels[1:]:
        ax.plot((qx / width) * w - 0.5, (qy / height) * h - 0.5, "x", color="cyan", markersize=8, mew=2)
    if outline is not None:
        region = _outline_mask(outline, (height, width))
        top[0].contour(region, levels=[0.5], colors="lime", linewidths=1.5)
        ys, xs = (np.arange(height) + 0.5) * h / height - 0.5, (np.arange(width) + 0.5) * w / width - 0.5
        for ax in panels[1:]:  # image pixel centres in key-map cell coordinates
            ax.contour(xs, ys, region, levels=[0.5], colors="lime", linewidths=1.2)
    return fig


def plot_prediction(image: np.ndarray, prediction: ArrayLike, label: ArrayLike | None = None) -> Figure:
    """The image, the predicted train ids and (optionally) the label side by side in the official Cityscapes
    colours (:data:`anncore.data.PALETTE`; ignored pixels black), with a legend of the classes that appear and, with
    a label, the pixel accuracy over labelled pixels."""
    pred = to_float64(prediction).astype(np.int64)
    panels: list[tuple[str, np.ndarray]] = [("image", np.asarray(image)), ("prediction", colorize(pred))]
    present = set(np.unique(pred).tolist())
    if label is not None:
        truth = to_float64(label).astype(np.int64)
        if truth.shape != pred.shape:
            raise ValueError(f"label must have the prediction's shape {pred.shape}, got {truth.shape}")
        valid = truth != IGNORE_INDEX
        accuracy = float((pred[valid] == truth[valid]).mean()) if valid.any() else float("nan")
        panels.append(("label", colorize(truth)))
        panels[1] = (f"prediction (pixel accuracy {accuracy:.1%})", panels[1][1])
        present |= set(np.unique(truth).tolist())
    height, width = pred.shape
    fig = Figure(figsize=(3.6 * len(panels), 1.0 + 3.6 * height / width), layout="constrained")
    for ax, (title, picture) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    classes = sorted(present - {IGNORE_INDEX})
    handles = [Patch(color=PALETTE[c] / 255.0, label=CLASS_NAMES[c]) for c in classes]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    return fig
