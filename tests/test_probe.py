"""Attention probes: hand-made features, class queries, visible attention, captured attention of a model, and the
maps made from it, each checked against an independent computation."""

import numpy as np
import pytest
import torch

from anncore import AFNB, APNB, NonLocal2d, attention_weights, effective_attention
from anncore.analysis.probe import (
    capture_attention,
    cell_centre,
    class_queries,
    image_features,
    image_to_cell,
    pixel_attention,
    region_mass,
    with_visible_attention,
)
from anncore.models.network import ANN


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
