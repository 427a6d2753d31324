"""The plotting helpers draw what they are given: values, cells, markers and shapes are read back from the figures."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from anncore import effective_attention
from anncore.course.viz import (
    ATTENTION_CMAP,
    QUERY_COLOUR,
    anchor_grids,
    anchor_level_maps,
    attention_overlay,
    draw_attention_matrix,
    draw_cost_bars,
    draw_pyramid_grid,
    draw_scaling,
    plot_anchor_weights,
    plot_attention_maps,
    plot_prediction,
    plot_pyramid_sampling,
    plot_query_attention,
    plot_shape_flow,
    query_class_names,
    shapes_table,
)
from anncore.data import PALETTE
from anncore.nn.pyramid import cell_bounds, pyramid_pool


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_anchor_grids_undo_pyramid_flattening():
    x = torch.randn(1, 1, 10, 13, dtype=torch.float64)
    grids = anchor_grids(pyramid_pool(x)[0, 0])
    assert [g.shape for g in grids] == [(1, 1), (3, 3), (6, 6), (8, 8)]
    np.testing.assert_allclose(grids[2], torch.nn.functional.adaptive_avg_pool2d(x, 6)[0, 0].numpy())
    with pytest.raises(ValueError, match="110"):
        anchor_grids(np.zeros(100))


@pytest.mark.parametrize("height,width,bins", [(7, 10, 3), (12, 12, 6), (5, 4, 8)])
def test_pyramid_grid_draws_the_real_overlapping_cells(height, width, bins):
    ax = draw_pyramid_grid(Figure().add_subplot(), height, width, bins)
    rects = rectangles(ax)
    assert len(rects) == bins * bins
    expected = {
        (w0 - 0.5, h0 - 0.5, w1 - w0, h1 - h0)
        for h0, h1 in cell_bounds(height, bins)
        for w0, w1 in cell_bounds(width, bins)
    }
    assert {(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects} == expected


def test_pyramid_sampling_figure_shows_map_cells_and_anchor_means():
    fmap = np.arange(11 * 14, dtype=float).reshape(11, 14)
    fig = plot_pyramid_sampling(fmap)
    axes = fig.axes
    assert len(axes) == 8 + 1  # four maps, four anchor grids, one colour bar
    assert [len(rectangles(ax)) for ax in axes[:4]] == [1, 9, 36, 64]
    np.testing.assert_array_equal(axes[0].images[0].get_array(), fmap)
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(fmap)[None, None], 3)[0, 0].numpy()
    np.testing.assert_allclose(axes[5].images[0].get_array(), pooled)
    assert "110 anchors" in fig._suptitle.get_text()


def test_anchor_weights_titles_give_level_shares():
    weights = np.zeros(110)
    weights[0] = 0.5
    weights[10:46] = 0.5 / 36
    fig = plot_anchor_weights(weights, title="the query's anchors")
    assert fig._suptitle.get_text() == "the query's anchors"  # not the last level's title
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles == ["1x1: 50.0% of the weight", "3x3: 0.0% of the weight", "6x6: 50.0% of the weight",
                      "8x8: 0.0% of the weight"]  # fmt: skip
    assert len(fig.axes) == 4 + 1 and fig.axes[4].get_ylabel() == "anchor weight a_j"  # the levels, one colour bar
    titles = titles[:4]
    assert [ax.images[0].get_clim() for ax in fig.axes[:4]] == [(0.0, 0.5)] * 4  # one scale for all levels
    assert fig.axes[0].texts[0].get_text() == "50.0%"


def test_attention_maps_grid_markers_and_values():
    image = np.zeros((40, 80, 3), np.uint8)
    maps = {"a": torch.rand(2, 4, 8), "b": np.random.default_rng(1).random((2, 4, 8))}
    queries = [(0, 0), (3, 7)]
    fig = plot_attention_maps(maps, queries, image=image)
    assert len(fig.axes) == 4 + 4  # four panels, then a colour bar for each, from 0 to its own peak
    assert [bar.get_ylim() for bar in fig.axes[4:]] == [(0.0, m[q].max()) for q in range(2) for m in
                                                        (maps["a"].numpy(), maps["b"])]  # fmt: skip
    ax = fig.axes[3]  # second query, map "b"
    np.testing.assert_allclose(ax.images[1].get_array(), maps["b"][1])
    alpha = ax.images[1].get_alpha()
    assert alpha.max() == pytest.approx(0.75) and alpha.min() >= 0  # opaque only at the peak
    marker = ax.lines[0]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == ((7 + 0.5) * 10, (3 + 0.5) * 10)
    assert fig.axes[0].get_title() == "a" and fig.axes[1].get_title() == "b"
    assert fig.axes[2].get_ylabel() == "query (3, 7)"
    single = plot_attention_maps({"a": maps["a"]}, queries)  # one kind of map: the queries side by side
    assert [len(ax.images) for ax in single.axes[:2]] == [1, 1]
    assert [ax.get_title() for ax in single.axes[:2]] == ["query (0, 0)", "query (3, 7)"]
    assert single._suptitle.get_text() == "a"
    assert single.axes[1].get_position().x0 > single.axes[0].get_position().x1
    with pytest.raises(ValueError, match="Q=2"):
        plot_attention_maps({"a": torch.rand(3, 4, 8)}, queries)


def test_attention_maps_outline_a_region_on_every_panel():
    board = np.zeros((40, 80), bool)
    board[5:15, 60:75] = True
    maps = {"a": torch.rand(1, 4, 8), "b": torch.rand(1, 4, 8)}
    fig = plot_attention_maps(maps, [(1, 1)], image=np.zeros((40, 80, 3), np.uint8), outline=board)
    for ax in fig.axes[:2]:
        (contour,) = [c for c in ax.get_children() if c.__class__.__name__ == "QuadContourSet"]
        (path,) = contour.get_paths()
        xs, ys = path.vertices[:, 0], path.vertices[:, 1]  # the board's edge, half a pixel outside its centres
        assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((60.5, 75.0, 5.5, 15.0), abs=0.5)
    with pytest.raises(ValueError, match=r"\(H, W\) = \(40, 80\)"):
        plot_attention_maps(maps, [(1, 1)], image=np.zeros((40, 80, 3), np.uint8), outline=board[::2])


def test_attention_matrix_draws_the_matrix_and_marks_rows():
    weights = torch.softmax(torch.randn(20, 30), dim=-1)
    ax = draw_attention_matrix(weights, rows=[3, 11])
    np.testing.assert_allclose(ax.images[0].get_array(), weights.double().numpy())
    assert sorted(line.get_ydata()[0] for line in ax.lines) == [3, 11]
    assert "20 x 30" in ax.get_title()
    named = draw_attention_matrix(weights, rows=[3, 11], row_labels=["road", "car"])
    assert [(text.get_text(), text.get_position()[1]) for text in named.texts] == [("road", 3), ("car", 11)]
    with pytest.raises(ValueError, match="name each of the 2 rows"):
        draw_attention_matrix(weights, rows=[3, 11], row_labels=["road"])


def test_scaling_plots_each_series_and_reference():
    ax = draw_scaling([1, 2, 4], {"nl": [1, 4, 16], "apnb": [1, 2, 4]}, "N", "bytes", references={"GPU": 8.0})
    assert [list(line.get_ydata()) for line in ax.lines[:2]] == [[1, 4, 16], [1, 2, 4]]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert any(t.get_text().strip() == "GPU" for t in ax.texts)
    with pytest.raises(ValueError, match="3 x positions"):
        draw_scaling([1, 2, 3], {"bad": [1, 2]}, "N", "bytes")


def test_cost_bars_stack_components_and_refuse_log_stacks():
    costs = {"NL": {"proj": 2.0, "core": 10.0}, "APNB": {"proj": 2.0, "core": 0.5}}
    ax = draw_cost_bars(costs, "GFLOP")
    widths = [p.get_width() for p in ax.patches]
    lefts = [p.get_x() for p in ax.patches]
    assert widths == [2.0, 2.0, 10.0, 0.5] and lefts == [0.0, 0.0, 2.0, 2.0]
    assert [t.get_text() for t in ax.texts] == [" 12 GFLOP", " 2.5 GFLOP"]
    with pytest.raises(ValueError, match="single component"):
        draw_cost_bars(costs, "GFLOP", log=True)
    assert draw_cost_bars({"NL": {"bytes": 4.0}, "APNB": {"bytes": 0.01}}, "GiB", log=True).get_xscale() == "log"


def test_shapes_table_formats_shapes_and_sizes():
    table = shapes_table(
        {"small": {"x": (1, 3, 8, 8), "y": (1, 256, 1024)}, "big": {"x": (1, 3, 16, 16)}}, bytes_per_element=4
    )
    assert list(table.index) == ["x", "y"]
    assert list(table.columns) == ["small", "small MiB", "big", "big MiB"]
    assert table.loc["x", "small"] == "1×3×8×8"
    assert table.loc["y", "small MiB"] == 1.0
    assert table.loc["y", "big"] == "" and np.isnan(table.loc["y", "big MiB"])


def test_shape_flow_draws_boxes_arrows_and_side_inputs():
    stages = [("image", (1, 3, 64, 64)), ("layer3", (1, 1024, 8, 8)), ("layer4", (1, 2048, 8, 8)), ("AFNB", (1, 2))]
    fig = plot_shape_flow(stages, highlight=["AFNB"], side_inputs=[("layer3", "AFNB", "keys, values")])
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(boxes) == 4 and len(arrows) == 3 + 1
    assert boxes[3].get_facecolor() != boxes[0].get_facecolor()
    texts = {t.get_text() for t in ax.texts}
    assert {"image", "1×3×64×64", "AFNB", "1×2048×8×8", "keys, values"} <= texts
    with pytest.raises(ValueError, match="unknown stage"):
        plot_shape_flow(stages, side_inputs=[("layer2", "AFNB", "")])


# ------------------------------------------------------------------------------------ attention of a trained model


def test_anchor_level_maps_paint_each_cell_with_its_weight():
    weights = np.arange(110, dtype=float)
    levels = anchor_level_maps(weights, (20, 30))
    assert [level.shape for level in levels] == [(20, 30)] * 4
    grids = anchor_grids(weights)
    assert np.all(levels[0] == grids[0][0, 0])
    assert cell_bounds(20, 3) == [(0, 7), (6, 14), (13, 20)]  # row 6 lies in the first two cells
    assert levels[1][5, 0] == grids[1][0, 0] and levels[1][6, 0] == grids[1][1, 0]  # the later cell shows
    assert levels[1][19, 29] == grids[1][2, 2] and levels[3][0, 29] == grids[3][0, 7]
    with pytest.raises(ValueError, match="110"):
        anchor_level_maps(weights[:50], (20, 30))


def test_attention_overlay_colours_cells_and_marks_the_query():
    image = np.full((32, 64, 3), 100, np.uint8)
    weights = np.zeros((4, 8))
    weights[1, 2] = 2.0
    weights[3, 7] = 0.5
    out = attention_overlay(image, weights, alpha=0.75)
    assert out.shape == (32, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # zero weight: the grey image
    from matplotlib import colormaps

    top = np.asarray(colormaps[ATTENTION_CMAP](1.0)[:3])
    expected = np.round(255 * (0.25 * 100 / 255 + 0.75 * top))
    np.testing.assert_allclose(out[8:16, 16:24].reshape(-1, 3), np.tile(expected, (64, 1)), atol=1)
    assert not np.array_equal(out[28, 60], out[0, 0])  # weight 0.5: partly coloured (opacity 0.75 sqrt(1/4))
    fixed = attention_overlay(image, weights, vmax=4.0)
    assert not np.array_equal(fixed[8, 16], out[8, 16])  # its own scale
    marked = attention_overlay(image, weights, query=(1, 2))
    assert tuple(marked[12, 20]) == QUERY_COLOUR  # the centre of cell (1, 2)
    grid_marked = attention_overlay(image, weights, query=(0, 0), query_size=(2, 4))  # another query grid
    assert tuple(grid_marked[8, 8]) == QUERY_COLOUR
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        attention_overlay(image[..., 0], weights)


def test_query_attention_figure_shows_the_map_and_each_level():
    image = np.random.default_rng(0).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    anchors = torch.softmax(torch.randn(110), 0)
    pixel_map = effective_attention(anchors, 5, 10).view(5, 10)
    fig = plot_query_attention(image, pixel_map, (2, 3), anchors, name="AFNB")
    axes = fig.axes
    assert len(axes) == 2 + 4 + 2  # image, map, four levels, the levels' colour bar, the map's colour bar
    assert axes[7].get_ylabel() == "weight w_p" and axes[7].get_ylim() == pytest.approx((0.0, float(pixel_map.max())))
    assert axes[0].get_title() == "query cell (2, 3) (image pixel 20, 28)"
    assert axes[1].get_title() == "AFNB: effective per-pixel weights w = aP"
    np.testing.assert_array_equal(axes[1].images[0].get_array(), attention_overlay(image, pixel_map))
    shares = [float(g.sum()) for g in anchor_grids(anchors)]
    assert [ax.get_title() for ax in axes[2:6]] == [
        f"{s}x{s} anchors: {v:.1%} of the weight" for s, v in zip((1, 3, 6, 8), shares, strict=True)
    ]
    assert [len(rectangles(ax)) for ax in axes[2:6]] == [1, 9, 36, 64]
    level = anchor_level_maps(anchors, (5, 10))[3]
    np.testing.assert_array_equal(
        axes[5].images[0].get_array(), attention_overlay(image, level, vmax=float(anchors.max()))
    )
    nl = plot_query_attention(image, torch.softmax(torch.randn(5, 10).flatten(), 0).view(5, 10), (0, 0), name="NL")
    assert len(nl.axes) == 2 + 1 and nl.axes[1].get_title() == "NL: per-pixel weights"
    board = np.zeros((40, 80), bool)
    board[4:12, 60:76] = True
    outlined = plot_query_attention(image, pixel_map, (2, 3), anchors, outline=board)
    assert [len(ax.collections) for ax in outlined.axes[:6]] == [1] * 6
    (top_left,) = outlined.axes[0].collections
    xs, ys = top_left.get_paths()[0].vertices.T  # the board's edge, between its pixels and the next
    assert 59 <= xs.min() <= 60 and 75 <= xs.max() <= 76 and 3 <= ys.min() <= 4 and 11 <= ys.max() <= 12
    with pytest.raises(ValueError, match="outline must be"):
        plot_query_attention(image, pixel_map, (2, 3), outline=board[:10])


def test_prediction_figure_uses_the_palette_and_scores_labelled_pixels():
    image = np.zeros((4, 8, 3), np.uint8)
    prediction = np.zeros((4, 8), np.int64)
    prediction[:, 4:] = 13  # car
    label = prediction.copy()
    label[0, :] = 255  # ignored
    label[3, 4:] = 14  # truck: 4 of 24 labelled pixels wrong
    fig = plot_prediction(image, torch.from_numpy(prediction), label)
    assert [ax.get_title() for ax in fig.axes] == ["image", "prediction (pixel accuracy 83.3%)", "label"]
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array()[0, 5], PALETTE[13])
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array()[0, 0], [0, 0, 0])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "car", "truck"]
    assert len(plot_prediction(image, prediction).axes) == 2
    with pytest.raises(ValueError, match="label must have the prediction's shape"):
        plot_prediction(image, prediction, label[:2])


def test_maps_are_titled_by_the_class_of_their_query():
    labels = np.full((32, 64), 255, np.uint8)  # image-resolution train ids
    labels[:16] = 10  # sky on top
    labels[16:, :32] = 0  # road bottom left; bottom right stays ignored
    queries = [(0, 0), (3, 1), (3, 7)]
    assert query_class_names(labels, queries, (4, 8)) == ["sky", "road", "ignored"]
    assert query_class_names(labels[4::8, 4::8], queries) == ["sky", "road", "ignored"]  # on the feature grid
    single = plot_attention_maps({"a": torch.rand(3, 4, 8)}, queries, labels=labels)
    titles = [ax.get_title() for ax in single.axes]
    assert titles[0].startswith("sky query") and titles[1].startswith("road query"), titles
    named = plot_attention_maps({"a": torch.rand(3, 4, 8)}, queries, titles=["x", "y", "z"])
    assert [ax.get_title().split("\n")[0] for ax in named.axes[:3]] == ["x", "y", "z"]
