"""The plotting helpers draw what they are given: values, cells, markers and shapes are read back from the figures."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from anncore import AFNB, APNB, NonLocal2d, attention_weights, effective_attention
from anncore.data import PALETTE
from anncore.model import ANN
from anncore.pyramid import cell_bounds, pyramid_pool
from anncore.viz import (
    ATTENTION_CMAP,
    QUERY_COLOUR,
    anchor_grids,
    anchor_level_maps,
    attention_overlay,
    capture_attention,
    cell_centre,
    class_queries,
    draw_attention_matrix,
    draw_cost_bars,
    draw_pyramid_grid,
    draw_scaling,
    image_features,
    image_to_cell,
    pixel_attention,
    plot_anchor_weights,
    plot_attention_maps,
    plot_prediction,
    plot_pyramid_sampling,
    plot_query_attention,
    plot_shape_flow,
    region_mass,
    shapes_table,
    with_visible_attention,
)


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_image_features_are_unit_colour_and_position():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    feats = image_features(image, stride=8, position_weight=2.0)
    assert feats.shape == (1, 5, 4, 6) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(1, 4, 6))
    colour_only = image_features(image, stride=8, position_weight=0.0)
    assert torch.all(colour_only[:, 3:] == 0)
    # position channels increase down the rows and along the columns
    assert torch.all(image_features(np.zeros((32, 48, 3), np.uint8))[0, 3].diff(dim=0) > 0)
    assert torch.all(image_features(np.zeros((32, 48, 3), np.uint8))[0, 4].diff(dim=1) > 0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        image_features(image[..., 0])


def test_class_queries_lie_inside_each_present_class():
    labels = np.zeros((10, 12), dtype=np.uint8)
    labels[:, :3] = 1  # a bar on the left
    labels[8:, 3:] = 1  # and along the bottom: an L whose centroid lies outside it
    labels[2:5, 6:9] = 2
    found = class_queries(labels, [2, 1, 7])
    assert list(found) == [2, 1]  # class 7 is absent
    assert found[2] == (3, 7)
    assert labels[found[1]] == 1
    features = np.zeros((2, 10, 12))
    features[:, 2:5, 6:9] = 1.0
    features[:, 4, 8] = 5.0  # an atypical pixel near the centre of class 2
    features[:, 2, 6] = 1.2
    assert class_queries(labels, [2], features)[2] != (4, 8)
    assert class_queries(labels, [2], features[None])[2] == class_queries(labels, [2], features)[2]


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
    assert len(axes) == 8
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
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["1x1: 50.0% of the weight", "3x3: 0.0% of the weight", "6x6: 50.0% of the weight",
                      "8x8: 0.0% of the weight"]  # fmt: skip
    assert [ax.images[0].get_clim() for ax in fig.axes] == [(0.0, 0.5)] * 4  # one scale for all levels
    assert fig.axes[0].texts[0].get_text() == "50.0%"


def test_attention_maps_grid_markers_and_values():
    image = np.zeros((40, 80, 3), np.uint8)
    maps = {"a": torch.rand(2, 4, 8), "b": np.random.default_rng(1).random((2, 4, 8))}
    queries = [(0, 0), (3, 7)]
    fig = plot_attention_maps(maps, queries, image=image)
    assert len(fig.axes) == 4
    ax = fig.axes[3]  # second query, map "b"
    np.testing.assert_allclose(ax.images[1].get_array(), maps["b"][1])
    alpha = ax.images[1].get_alpha()
    assert alpha.max() == pytest.approx(0.75) and alpha.min() >= 0  # opaque only at the peak
    marker = ax.lines[0]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == ((7 + 0.5) * 10, (3 + 0.5) * 10)
    assert fig.axes[0].get_title() == "a" and fig.axes[1].get_title() == "b"
    assert fig.axes[2].get_ylabel() == "query (3, 7)"
    single = plot_attention_maps({"a": maps["a"]}, queries)  # one kind of map: the queries side by side
    assert [len(ax.images) for ax in single.axes] == [1, 1]
    assert [ax.get_title() for ax in single.axes] == ["query (0, 0)", "query (3, 7)"]
    assert single._suptitle.get_text() == "a"
    assert single.axes[1].get_position().x0 > single.axes[0].get_position().x1
    with pytest.raises(ValueError, match="Q=2"):
        plot_attention_maps({"a": torch.rand(3, 4, 8)}, queries)


def test_attention_matrix_draws_the_matrix_and_marks_rows():
    weights = torch.softmax(torch.randn(20, 30), dim=-1)
    ax = draw_attention_matrix(weights, rows=[3, 11])
    np.testing.assert_allclose(ax.images[0].get_array(), weights.double().numpy())
    assert sorted(line.get_ydata()[0] for line in ax.lines) == [3, 11]
    assert "20 x 30" in ax.get_title()


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


def test_with_visible_attention_makes_attention_reach_the_output():
    x = torch.randn(1, 8, 5, 6)
    fresh = APNB(8, 8, 4, 4).eval()
    assert torch.equal(fresh.attention.W.weight, torch.zeros_like(fresh.attention.W.weight))
    block = with_visible_attention(APNB(8, 8, 4, 4), seed=3)
    assert not block.training and block.attention.W.weight.abs().min() > 0
    with torch.no_grad():
        baseline = block(x)
        block.attention.f_value.weight.add_(1.0)  # change only what attention carries
        assert not torch.allclose(block(x), baseline)
    again = with_visible_attention(AFNB(8, 6, 4, 4, 4), seed=3)
    other = with_visible_attention(AFNB(8, 6, 4, 4, 4), seed=4)
    assert torch.equal(
        again.fuse[1].running_var, with_visible_attention(AFNB(8, 6, 4, 4, 4), seed=3).fuse[1].running_var
    )
    assert not torch.equal(again.attention.W.bias, other.attention.W.bias)


# ------------------------------------------------------------------------------------ attention of a trained model
def test_image_pixels_and_feature_cells_map_both_ways():
    image, grid = (64, 128), (8, 16)  # stride 8
    assert image_to_cell(0, 0, image, grid) == (0, 0)
    assert image_to_cell(63.9, 127, image, grid) == (7, 15)
    assert image_to_cell(15, 16, image, grid) == (1, 2)
    for cell in [(0, 0), (3, 9), (7, 15)]:
        centre = cell_centre(*cell, image, grid)
        assert centre == ((cell[0] + 0.5) * 8, (cell[1] + 0.5) * 8)
        assert image_to_cell(*centre, image, grid) == cell
    with pytest.raises(ValueError, match=r"\(y, x\) must lie inside the 64x128 image"):
        image_to_cell(64, 0, image, grid)
    with pytest.raises(ValueError, match=r"cell of the 8x16 feature grid"):
        cell_centre(8, 0, image, grid)


@pytest.fixture(scope="module")
def tiny_ann():
    torch.manual_seed(0)
    return ANN(19, "small", "ann").eval()


def test_capture_records_every_block_without_changing_the_forward(tiny_ann):
    images = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        plain = tiny_ann(images)["out"]
        low, high = tiny_ann.backbone(images)
    output, blocks = capture_attention(tiny_ann, images)
    torch.testing.assert_close(output["out"], plain, rtol=0, atol=0)
    assert list(blocks) == ["AFNB", "APNB"]  # in the order they ran
    assert all(not m._forward_pre_hooks for m in tiny_ann.modules())  # hooks removed
    afnb, apnb = blocks["AFNB"], blocks["APNB"]
    assert (
        afnb.attention is tiny_ann.head.afnb.attention and torch.equal(afnb.low, low) and torch.equal(afnb.high, high)
    )
    assert apnb.low is apnb.high and apnb.query_size == apnb.key_size == (8, 16) and apnb.pool_sizes == (1, 3, 6, 8)
    cells = [(0, 0), (5, 11)]
    rows = afnb.rows(cells)
    with torch.no_grad():
        _, full = tiny_ann.head.afnb(low, high, return_attention=True)
    torch.testing.assert_close(rows, full[:, [0, 5 * 16 + 11]])
    maps = afnb.pixel_maps(cells)
    assert maps.shape == (2, 2, 8, 16)
    torch.testing.assert_close(maps.flatten(2), effective_attention(rows, 8, 16))
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2, 2))
    with pytest.raises(ValueError, match="8x16 query grid"):
        afnb.rows([(8, 0)])


def test_capture_works_on_bare_and_repeated_blocks_and_keeps_the_mode():
    torch.manual_seed(1)
    nl = NonLocal2d(8, 8, 4, 4).train()
    x = torch.randn(1, 8, 5, 7)
    _, blocks = capture_attention(nl, x)
    assert list(blocks) == ["NL"] and blocks["NL"].pool_sizes is None
    nl.train()
    rows = blocks["NL"].rows([(2, 3)])
    assert nl.training  # rows() ran the branch in eval mode and gave the mode back
    with torch.no_grad():
        _, full = nl.eval()(x, return_attention=True)
    torch.testing.assert_close(rows[0, 0], full[0, 2 * 7 + 3])
    torch.testing.assert_close(blocks["NL"].pixel_maps([(2, 3)])[0, 0], full[0, 17].view(5, 7))
    twice = torch.nn.Sequential(APNB(8, 8, 4, 4), APNB(8, 8, 4, 4))
    assert list(capture_attention(twice, x)[1]) == ["APNB (0)", "APNB (1)"]
    with pytest.raises(ValueError, match="no AFNB, APNB or NonLocal2d"):
        capture_attention(torch.nn.Conv2d(8, 8, 1), x)


def test_without_pyramid_attends_to_every_pixel_with_the_learned_projections(tiny_ann):
    _, blocks = capture_attention(tiny_ann, torch.randn(1, 3, 64, 128))
    apnb = blocks["APNB"]
    plain = apnb.without_pyramid()
    assert plain.pool_sizes is None and apnb.pool_sizes == (1, 3, 6, 8)  # the model's block is untouched
    assert plain.attention.f_query is plain.attention.f_key and plain.name == "APNB without pyramid"
    with torch.no_grad():
        tokens = apnb.attention.f_key(apnb.high).flatten(2).transpose(1, 2)
    torch.testing.assert_close(plain.rows([(3, 4)]), attention_weights(tokens[:, [3 * 16 + 4]], tokens))
    afnb = blocks["AFNB"].without_pyramid()
    assert afnb.rows([(0, 0)]).shape == (1, 1, 128)
    with pytest.raises(ValueError, match="no pyramid"):
        plain.without_pyramid()


def test_pixel_attention_reshapes_rows_and_expands_anchors():
    rows = torch.softmax(torch.randn(3, 20), -1)
    torch.testing.assert_close(pixel_attention(rows, (4, 5), None), rows.view(3, 4, 5))
    anchors = torch.softmax(torch.randn(3, 110), -1)
    torch.testing.assert_close(
        pixel_attention(anchors, (9, 10), (1, 3, 6, 8)).flatten(1), effective_attention(anchors, 9, 10)
    )
    with pytest.raises(ValueError, match="20 keys"):
        pixel_attention(rows[:, :7], (4, 5), None)


def test_region_mass_weighs_cells_by_their_coverage():
    mask = np.zeros((16, 32), bool)
    mask[:8, :8] = True  # the top-left 2x2 cells of a 4x8 grid
    uniform = np.full((4, 8), 1 / 32)
    assert region_mass(uniform, mask) == pytest.approx(mask.mean())
    peaked = np.zeros((3, 4, 8))
    peaked[0, 1, 1] = 1.0
    peaked[1, 3, 7] = 1.0
    peaked[2, 0, 2] = 1.0
    mask[:2, 8:12] = True  # half of cell (0, 2)
    np.testing.assert_allclose(region_mass(peaked, mask), [1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="mask"):
        region_mass(uniform, np.zeros((2, 2), bool))


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
    assert len(axes) == 2 + 4 + 1  # image, map, four levels, colorbar
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
    assert len(nl.axes) == 2 and nl.axes[1].get_title() == "NL: per-pixel weights"
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
