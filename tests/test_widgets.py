"""The attention explorer without a browser: controls drive the views; what it shows is what anncore.course.viz
computes."""

import io
import math
import sys
import types

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torchvision import tv_tensors

from anncore.course.viz import attention_overlay, plot_query_attention
from anncore.course.widgets import AttentionExplorer
from anncore.data import colorize, val_transforms
from anncore.data.labels import LABEL_ID_TO_TRAIN_ID, lookup
from anncore.data.synthetic import make_scene
from anncore.models.network import ANN


class Scenes:
    """Two synthetic 64x128 street scenes, normalised as the validation set is."""

    def __init__(self) -> None:
        self.items = []
        for seed in (0, 1):
            image, label_ids = make_scene(seed, 64, 128)
            train_ids = lookup(label_ids, LABEL_ID_TO_TRAIN_ID, "labels").astype(np.uint8)
            image_t = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
            self.items.append(val_transforms()(image_t, tv_tensors.Mask(torch.from_numpy(train_ids))))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]

    def image_id(self, index: int) -> str:
        return f"scene_{index}"


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def scenes():
    return Scenes()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ANN(19, "small", "ann")


def test_sliders_move_the_query_and_the_maps_are_vizs(model, scenes):
    explorer = AttentionExplorer(model, scenes, zoom=1)
    assert explorer.image_menu.options == (("scene_0", 0), ("scene_1", 1))
    assert explorer.block_menu.options == ("AFNB", "APNB")
    assert (explorer.row_slider.max, explorer.col_slider.max) == (7, 15)  # the 8x16 grid at stride 8
    assert "ann-attention-image" in explorer.attention_image._dom_classes
    before = explorer.attention_image.value
    explorer.col_slider.value = 9
    explorer.row_slider.value = 3
    assert explorer.attention_image.value != before
    assert 0 < explorer.last_update_ms < 10_000
    view = explorer.view()
    captured = explorer.capture.blocks["AFNB"]
    assert view.cell == (3, 9) and view.block == "AFNB"
    torch.testing.assert_close(view.pixel_map, captured.pixel_maps([(3, 9)])[0, 0])
    torch.testing.assert_close(view.anchor_weights, captured.rows([(3, 9)])[0, 0])
    shown = decode(explorer.attention_image.value)
    np.testing.assert_array_equal(shown, attention_overlay(explorer.capture.image, view.pixel_map, (3, 9), (8, 16)))
    assert "query cell (3, 9) of 8x16 = image pixel (28, 76)" in explorer.info.value
    enlarged = AttentionExplorer(model, scenes, indices=[0])  # 128 pixels wide: shown 4x, at least 512 wide
    assert decode(enlarged.attention_image.value).shape == (256, 512, 3)
    enlarged.select(cell=(3, 9))
    assert "= image pixel (28, 76)" in enlarged.info.value  # in the image's own pixels, not the display's
    assert decode(enlarged.prediction_image.value).shape == (256, 1024, 3)
    with pytest.raises(ValueError, match="zoom must be a positive int"):
        AttentionExplorer(model, scenes, zoom=0)


def test_block_and_image_menus_update_every_view(model, scenes):
    explorer = AttentionExplorer(model, scenes, continuous_update=False)
    explorer.select(cell=(2, 2))
    afnb, anchors = explorer.attention_image.value, explorer.anchor_image.value
    explorer.block_menu.value = "APNB"
    assert explorer.view().block == "APNB"
    assert explorer.attention_image.value != afnb and explorer.anchor_image.value != anchors
    assert explorer.anchor_image.layout.display is None  # APNB has anchors to show
    prediction = explorer.prediction_image.value
    explorer.image_menu.value = 1
    assert explorer.prediction_image.value != prediction
    assert explorer.block_menu.value == "APNB" and explorer.cell == (2, 2)  # kept across images
    _, label = scenes[1]
    expected = np.concatenate([colorize(explorer.capture.prediction), colorize(label)], axis=1)
    np.testing.assert_array_equal(decode(explorer.prediction_image.value)[::4, ::4], expected)
    view = explorer.select(image=0, block="AFNB", cell=(7, 15))
    assert (view.image_index, view.block, view.cell) == (0, "AFNB", (7, 15))
    with pytest.raises(ValueError, match="block must be one of"):
        explorer.select(block="NL")
    with pytest.raises(ValueError, match="8x16 query grid"):
        explorer.select(cell=(8, 0))
    with pytest.raises(ValueError, match="sample indices"):
        explorer.select(image=5)
    with pytest.raises(ValueError, match="indices must be"):
        AttentionExplorer(model, scenes, indices=[2])


def test_a_non_local_model_shows_no_anchors(scenes):
    torch.manual_seed(0)
    explorer = AttentionExplorer(ANN(19, "small", "nl"), scenes, indices=[1])
    assert explorer.block_menu.options == ("NL",)
    view = explorer.select(cell=(4, 4))
    assert view.anchor_weights is None and view.pixel_map.shape == (8, 16)
    assert explorer.anchor_image.layout.display == "none"
    assert "no anchors" in explorer.info.value


def test_blocks_without_their_pyramid_can_be_compared(model, scenes):
    explorer = AttentionExplorer(model, scenes, indices=[0], without_pyramid=True)
    assert explorer.block_menu.options == ("AFNB", "APNB", "AFNB without pyramid", "APNB without pyramid")
    view = explorer.select(block="APNB without pyramid", cell=(1, 1))
    assert view.anchor_weights is None and explorer.anchor_image.layout.display == "none"
    expected = explorer.capture.blocks["APNB"].without_pyramid().pixel_maps([(1, 1)])[0, 0]
    torch.testing.assert_close(view.pixel_map, expected)


def test_static_figure_is_the_same_view(model, scenes):
    explorer = AttentionExplorer(model, scenes)
    view = explorer.select(block="APNB", cell=(5, 1))
    fig = explorer.figure()
    assert isinstance(fig, Figure)
    expected = plot_query_attention(explorer.capture.image, view.pixel_map, (5, 1), view.anchor_weights, name="x")
    for got, want in zip(fig.axes, expected.axes, strict=True):
        for a, b in zip(got.images, want.images, strict=True):
            np.testing.assert_array_equal(a.get_array(), b.get_array())
    assert fig.axes[1].get_title() == "APNB (scene_0): effective per-pixel weights w = aP"


def test_clicks_choose_the_query_where_ipyevents_is_installed(model, scenes, monkeypatch):
    assert AttentionExplorer(model, scenes, indices=[0]).clicks is None  # not installed here: sliders only

    class Event:
        def __init__(self, source, watched_events):
            self.source, self.watched_events, self.handlers = source, watched_events, []

        def on_dom_event(self, handler):
            self.handlers.append(handler)

    monkeypatch.setitem(sys.modules, "ipyevents", types.SimpleNamespace(Event=Event))
    explorer = AttentionExplorer(model, scenes, indices=[0])
    assert explorer.clicks.source is explorer.attention_image and explorer.clicks.watched_events == ["click"]
    explorer.clicks.handlers[0]({"type": "click", "dataX": 400, "dataY": 80})  # shown 4x: image pixel (20, 100)
    assert explorer.cell == (2, 12)


def test_notebook_repr_is_stable(model, scenes):
    explorer = AttentionExplorer(model, scenes)
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == "AttentionExplorer(2 images, blocks ['AFNB', 'APNB'])"
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    assert not math.isnan(explorer.last_update_ms)
