"""The ANN network and its baselines: official parameter counts, outputs, attribute access, reloading."""

import pytest
import torch
from torch import nn

from anncore import AFNB, APNB, NonLocal2d
from anncore.data import NUM_CLASSES
from anncore.errors import BadInput, UserError
from anncore.models.backbone import BACKBONES
from anncore.models.checkpoint import save_checkpoint
from anncore.models.heads import HEAD_WIDTHS, HEADS
from anncore.models.loading import load_model
from anncore.models.network import ANN


def count(module):
    return sum(p.numel() for p in module.parameters())


def conv(cin, cout, k=1):
    return cin * cout * k * k + cout  # official convs in the head all have a bias


@pytest.mark.filterwarnings("ignore::anncore.models.backbone.UntrainedBackboneWarning")
def test_ann_head_on_resnet101_has_the_official_20_3m_parameters():
    """The official head without aux ≈ 20.3 M on ResNet-101 (K = 19), counted by hand from the official layers."""
    with torch.device("meta"):
        model = ANN(19, "resnet101", "ann")
    bn = 2  # weight and bias per channel
    afnb = (
        conv(1024, 256) + 256 * bn  # f_key
        + conv(2048, 256) + 256 * bn  # f_query
        + conv(1024, 256)  # f_value
        + conv(256, 2048)  # W
        + conv(2048 + 2048, 2048) + 2048 * bn  # fusion
    )  # fmt: skip
    apnb = conv(512, 256) + 256 * bn + conv(512, 256) + conv(256, 512) + conv(1024, 512) + 512 * bn
    head = afnb + conv(2048, 512, 3) + 512 * bn + apnb + conv(512, 19)
    assert apnb == 920_576
    assert count(model.head) == head == 20_340_499
    assert count(model.aux_head) == conv(1024, 512, 3) + 512 * bn + conv(512, 19)


def test_heads_differ_only_in_their_context_blocks():
    models = {head: ANN(19, "small", head) for head in HEADS}
    blocks = {head: {name: type(block) for name, block in m.head.blocks().items()} for head, m in models.items()}
    assert blocks == {
        "ann": {"AFNB": AFNB, "APNB": APNB},
        "apnb": {"APNB": APNB},
        "nl": {"non-local": NonLocal2d},
        "fcn": {},
    }
    assert {head: type(m.head).name for head, m in models.items()} == {head: head for head in HEADS}
    assert count(models["ann"]) - count(models["apnb"]) == count(models["ann"].head.afnb)
    assert count(models["apnb"]) - count(models["fcn"]) == count(models["apnb"].head.apnb)
    assert count(models["nl"]) == count(models["apnb"])  # same convs; NL just skips the pooling


@pytest.mark.parametrize("head", HEADS)
def test_outputs_at_input_size_train_and_eval(head):
    model = ANN(5, "small", head, attn_implementation="naive")
    x = torch.randn(2, 3, 70, 90)  # not a multiple of 8
    out = model.train()(x)
    assert set(out) == {"out", "aux"} and out["out"].shape == out["aux"].shape == (2, 5, 70, 90)
    with torch.no_grad():
        assert set(model.eval()(x)) == {"out"}
    for block in model.head.blocks().values():
        assert block.last_attn_implementation == "naive"


def test_logits_upsampled_with_align_corners_true():
    model = ANN(3, "small", "fcn", aux=False).eval()
    captured = {}
    model.head.cls.register_forward_hook(lambda module, args, out: captured.setdefault("low", out))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 57, 81))["out"]
    low = captured["low"]
    for i, j in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:  # align_corners=True maps corner pixels onto corner pixels
        torch.testing.assert_close(out[..., i, j], low[..., i, j])
    assert model.aux_head is None


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    model = ANN(19, "small", "ann").eval()
    nn.init.normal_(model.head.apnb.attention.W.weight)  # make attention matter
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)["out"]
        got = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))["out"]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_load_model_rebuilds_from_a_checkpoint_without_training_code(tmp_path):
    torch.manual_seed(0)
    model = ANN(7, "small", "nl", attn_implementation="naive").eval()
    nn.init.normal_(model.head.nl.attention.W.weight)
    save_checkpoint({"model": model.state_dict(), "model_config": model.config}, tmp_path / "checkpoint.pt")
    loaded = load_model(tmp_path / "checkpoint.pt")
    assert not loaded.training and loaded.config == model.config
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x)["out"], model(x)["out"])


@pytest.mark.parametrize("kept", [{"model_config": {"backbone": "small"}}, {"optimizer": {}}, {}])
def test_a_checkpoint_without_a_model_is_a_user_error_naming_the_file(tmp_path, kept):
    """Checked before its weights are read: a file without ``model`` once raised ``KeyError: 'model'``."""
    path = tmp_path / "no-model.pt"
    save_checkpoint(kept, path)
    with pytest.raises(UserError, match=f"{path} holds no model") as caught:
        load_model(path)
    assert "\n" not in str(caught.value)


def test_every_backbone_has_head_widths():
    """``ANN`` indexes :data:`HEAD_WIDTHS` by the backbone's name, with no fallback."""
    assert set(HEAD_WIDTHS) == set(BACKBONES)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="head must be one of"):
        ANN(19, "small", "psp")
    with pytest.raises(ValueError, match="backbone must be one of"):
        ANN(19, "vgg16")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        ANN(19, "small", "fcn", attn_implementation="fast")  # refused even by the head without a block


def test_the_pyramid_is_an_architecture_choice_kept_by_the_checkpoint(tmp_path):
    """``pool_sizes`` reaches both APNB and AFNB, changes S but no parameter, and survives a checkpoint; a checkpoint
    written before the option existed (no ``pool_sizes`` in its ``model_config``) loads with the paper's pyramid."""
    torch.manual_seed(0)
    model = ANN(NUM_CLASSES, "small", "ann", pool_sizes=(1, 2, 3, 6)).eval()
    assert model.head.apnb.attention.pool_sizes == (1, 2, 3, 6) == model.head.afnb.attention.pool_sizes
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ANN(NUM_CLASSES, "small").parameters())
    images = torch.randn(1, 3, 64, 96)
    _, anchors = model.head.apnb(torch.randn(1, 128, 8, 12), return_attention=True)
    assert anchors.shape[-1] == 1 + 4 + 9 + 36
    save_checkpoint({"model": model.state_dict(), "model_config": model.config}, tmp_path / "checkpoint.pt")
    loaded = load_model(tmp_path / "checkpoint.pt")
    assert loaded.head.apnb.attention.pool_sizes == (1, 2, 3, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["out"], model(images)["out"])
    old = {k: v for k, v in model.config.items() if k != "pool_sizes"}
    paper = ANN(**old).eval()
    save_checkpoint({"model": paper.state_dict(), "model_config": old}, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").head.apnb.attention.pool_sizes == (1, 3, 6, 8)


def test_the_heads_create_their_parameters_in_the_official_order():
    """A state dict written before the heads were classes (fusion, bottleneck, context block, classifier, in that
    order) loads key for key, and seeded construction draws the same initial weights."""
    for head, keys in {
        "ann": ["afnb", "bottleneck", "apnb", "cls"],
        "nl": ["bottleneck", "nl", "cls"],
        "fcn": ["bottleneck", "cls"],
    }.items():
        model = ANN(19, "small", head)
        assert list(dict.fromkeys(k.split(".")[1] for k in model.state_dict() if k.startswith("head."))) == keys


def test_an_unknown_head_is_refused_naming_the_registry():
    with pytest.raises(BadInput, match=r"head must be one of \('ann', 'fcn', 'nl', 'apnb'\), got 'psp'"):
        ANN(19, "small", "psp")
