"""Checkpoints of the official ANN code and of mmsegmentation converted by :mod:`anncore.models.convert` compute what
their source networks compute.

The source layouts (key names, shapes, BN buffers, shared projections) are transcribed from the public model
definitions - MendelXu/ANN ``models/seg/nets/annn.py``, ``models/seg/utils/{afnb,apnb}.py``,
``models/backbones/resnet/resnet_models.py`` (with ``resnet_backbone.py`` and ``models/tools/module_helper.py``);
mmsegmentation ``mmseg/models/decode_heads/ann_head.py``, ``mmseg/models/utils/self_attention_block.py``,
``mmseg/models/backbones/resnet.py``, ``mmseg/models/decode_heads/fcn_head.py`` - in :mod:`source_layouts`. Nothing is
downloaded: the weights are random (fixed seeds), and the reference output is a small functional forward
(``torch.nn.functional`` only) over the SOURCE keys, written independently of anncore's modules and of the converter.
ResNet-50 depth, a 67x83 input (odd, so the official ``ceil_mode`` max-pool differs from ``floor``), float64, 1e-6 on
the logits.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from source_layouts import (
    as_float64,
    caffe_bgr,
    imagenet_normalised,
    mmseg_forward,
    mmseg_shapes,
    mmseg_state_dict,
    official_forward,
    official_shapes,
    official_state_dict,
    raw_image,
)

from anncore.errors import BadInput
from anncore.models.convert import convert_checkpoint, convert_state_dict
from anncore.models.loading import load_model
from anncore.models.network import ANN

DEPTH = "resnet50"
CLASSES = 19
ATOL64 = 1e-6

#: the decode-head part of an mmseg ``cfg.pretty_text`` (0.x ``configs/_base_/models/ann_r50-d8.py``), as ``meta``
#: holds it; the backbone dict has no ``align_corners``
MMSEG_CONFIG = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(
        type='ResNetV1c', depth=50, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1), norm_cfg=dict(type='SyncBN', requires_grad=True), norm_eval=False, style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        type='ANNHead', in_channels=[1024, 2048], in_index=[2, 3], channels=512, project_channels=256,
        query_scales=(1, ), key_pool_scales=(1, 3, 6, 8), dropout_ratio=0.1, num_classes=19,
        norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners={ac},
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead', in_channels=1024, in_index=2, channels=256, num_convs=1, concat_input=False,
        dropout_ratio=0.1, num_classes=19, norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners={ac},
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
"""


def mmseg_config(align_corners: bool) -> str:
    return MMSEG_CONFIG.format(ac=align_corners)


@pytest.fixture(scope="module")
def raw() -> torch.Tensor:
    return raw_image(67, 83)


# float32 weights as checkpoints hold them; the in-memory checks use them in float64 (exact), the file checks as saved
@pytest.fixture(scope="module")
def official32() -> dict[str, torch.Tensor]:
    return official_state_dict(DEPTH, CLASSES, seed=0, dtype=torch.float32)


@pytest.fixture(scope="module")
def mmseg32() -> dict[str, torch.Tensor]:
    return mmseg_state_dict(DEPTH, CLASSES, seed=1, dtype=torch.float32)


@pytest.fixture(scope="module")
def official64(official32) -> dict[str, torch.Tensor]:
    return as_float64(official32)


@pytest.fixture(scope="module")
def mmseg64(mmseg32) -> dict[str, torch.Tensor]:
    return as_float64(mmseg32)


@pytest.fixture(scope="module")
def official_reference(official32, raw) -> torch.Tensor:
    """The official network's logits on the official input (BGR 0-255 minus the caffe mean) of ``raw``."""
    return official_forward(official32, caffe_bgr(raw), DEPTH)


@pytest.fixture(scope="module")
def mmseg_reference(mmseg32, raw):
    """``reference(align_corners)``: mmseg's logits on ``raw`` ImageNet-normalised (each computed once)."""
    cache: dict[bool, torch.Tensor] = {}

    def reference(align_corners: bool) -> torch.Tensor:
        if align_corners not in cache:
            cache[align_corners] = mmseg_forward(mmseg32, imagenet_normalised(raw), DEPTH, align_corners)
        return cache[align_corners]

    return reference


def _loaded(state: dict[str, torch.Tensor], config: dict) -> ANN:
    """``ANN(**config)`` in float64 and eval mode with ``state`` loaded strictly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the backbone is built untrained: the state dict replaces it
        model = ANN(**config)
    model = model.double().eval()
    model.load_state_dict(state, strict=True)
    return model


def _logits(model: ANN, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(image)["out"]


def _assert_logits(ours: torch.Tensor, reference: torch.Tensor, atol: float = ATOL64, rtol: float = 0.0) -> None:
    assert ours.shape == reference.shape == (1, CLASSES, 67, 83)
    assert reference.abs().max() > 0.05  # the check is not vacuous
    torch.testing.assert_close(ours.to(reference.dtype), reference, atol=atol, rtol=rtol)


# --------------------------------------------------------------------------------------------------------------------
# 5. the transcribed tables reproduce the sources' totals (validates the transcription, not the converter)


def test_source_tables_have_the_key_counts_of_the_sources():
    official, mmseg = official_shapes("resnet101", 19), mmseg_shapes("resnet101", 19)
    backbone = sum(k.startswith("backbone.") for k in official)
    assert (len(official), backbone, len(official) - backbone) == (704, 636, 68)
    backbone = sum(k.startswith("backbone.") for k in mmseg)
    assert (len(mmseg), backbone, len(mmseg) - backbone) == (696, 636, 60)
    small = mmseg_shapes("resnet50", 19)
    assert (len(small), sum(k.startswith("backbone.") for k in small)) == (390, 330)
    # unique parameters of the source networks; the APNB query projection is an alias of the key projection
    buffers = ("running_mean", "running_var", "num_batches_tracked")

    def params(shapes: dict[str, tuple[int, ...]], alias: str) -> int:
        return sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith(buffers) and alias not in k)

    assert params(official, "context.2.stages.0.f_query.") == 67_694_310
    assert params(mmseg, "context.stages.0.query_project.") == 65_220_742
    assert params(small, "context.stages.0.query_project.") == 46_228_614
    # a few rows, shaped as the source definitions shape them
    assert official["backbone.layer1.0.conv1.weight"] == (64, 128, 1, 1)
    assert official["backbone.layer1.0.downsample.0.weight"] == (256, 128, 1, 1)
    assert official["fusion.conv_bn_dropout.1.running_var"] == (2048,)
    assert official["context.2.conv_bn_dropout.1.0.weight"] == (512,)
    assert official["dsn.0.weight"] == (512, 1024, 3, 3) and official["dsn.0.bias"] == (512,)
    assert mmseg["backbone.stem.6.weight"] == (64, 32, 3, 3)
    assert mmseg["backbone.layer1.0.conv1.weight"] == (64, 64, 1, 1)
    assert mmseg["auxiliary_head.convs.0.conv.weight"] == (256, 1024, 3, 3)
    assert "auxiliary_head.convs.0.conv.bias" not in mmseg and "decode_head.bottleneck.conv.bias" not in mmseg
    assert mmseg["decode_head.fusion.stages.0.value_project.bias"] == (256,)


def test_shared_projections_are_one_tensor_in_both_layouts(official32, mmseg32, official64):
    for state in (official32, official64):
        a = "module.context.2.stages.0."
        assert state[f"{a}f_query.0.weight"] is state[f"{a}f_key.0.weight"]
        assert state[f"{a}f_query.1.0.running_var"] is state[f"{a}f_key.1.0.running_var"]
        assert all(key.startswith("module.") for key in state)
    a = "decode_head.context.stages.0."
    assert mmseg32[f"{a}query_project.conv.weight"] is mmseg32[f"{a}key_project.conv.weight"]


# --------------------------------------------------------------------------------------------------------------------
# 1. official


def test_official_conversion_computes_the_official_network(official64, raw, official_reference):
    state, config = convert_state_dict(official64, "official")
    assert config["backbone"] == DEPTH and config["num_classes"] == CLASSES and config["head"] == "ann"
    assert config["aux"] is True and config["aux_width"] == 512 and config["stem"] == "official"
    assert config["align_corners"] is True and config["input_norm"] == "caffe_bgr"
    model = _loaded(state, config)
    # anncore's input (RGB, ImageNet mean/std) vs the official input of the same image (BGR 0-255 - caffe mean)
    _assert_logits(_logits(model, imagenet_normalised(raw)), official_reference)


def test_official_conversion_without_module_prefix_or_bn_counters(official64, raw, official_reference):
    """The official loader also takes bare keys (runner_helper.py:60-61), and a BN that saves no
    ``num_batches_tracked`` (BatchNorm before PyTorch 0.4.1) leaves out nothing the forward needs."""
    bare = {k.removeprefix("module."): v for k, v in official64.items() if not k.endswith(".num_batches_tracked")}
    state, config = convert_state_dict(bare, "official")
    _assert_logits(_logits(_loaded(state, config), imagenet_normalised(raw)), official_reference)


@pytest.mark.parametrize("source", ["official", "mmseg"])
def test_resnet101_checkpoints_load_strictly(source):
    """The full-size layouts (704 / 696 keys): depth read from layer3 (23 blocks); keys and shapes only."""
    build = official_state_dict if source == "official" else mmseg_state_dict
    state, config = convert_state_dict(build("resnet101", CLASSES, seed=4, dtype=torch.float32), source)
    assert config["backbone"] == "resnet101" and config["stem"] == source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ANN(**config).load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------------------------------
# 2. mmsegmentation


@pytest.mark.parametrize("align_corners", [False, True], ids=["512x1024-config", "769x769-config"])
def test_mmseg_conversion_computes_the_mmseg_network(mmseg64, raw, mmseg_reference, align_corners):
    state, config = convert_state_dict(mmseg64, "mmseg", meta_config=mmseg_config(align_corners))
    assert config["backbone"] == DEPTH and config["num_classes"] == CLASSES and config["head"] == "ann"
    assert config["aux"] is True and config["aux_width"] == 256 and config["stem"] == "mmseg"
    assert config["align_corners"] is align_corners and config["input_norm"] == "imagenet"
    model = _loaded(state, config)
    _assert_logits(_logits(model, imagenet_normalised(raw)), mmseg_reference(align_corners))  # same input as ours


def test_mmseg_conversion_without_the_query_alias(mmseg64, raw, mmseg_reference):
    """A state dict without the shared ``query_project`` entries (saved with the alias dropped) converts too; the
    ``align_corners`` argument overrides the config's."""
    lean = {k: v for k, v in mmseg64.items() if "context.stages.0.query_project." not in k}
    state, config = convert_state_dict(lean, "mmseg", meta_config=mmseg_config(True), align_corners=False)
    assert config["align_corners"] is False
    _assert_logits(_logits(_loaded(state, config), imagenet_normalised(raw)), mmseg_reference(False))


# --------------------------------------------------------------------------------------------------------------------
# 3. through files and the command line


@pytest.fixture(scope="module")
def source_files(tmp_path_factory, official32, mmseg32):
    """An official and an mmseg checkpoint file of the float32 weights, saved as their trainers save them."""
    folder = tmp_path_factory.mktemp("sources")
    official_file = folder / "fs_annn_cityscapes_segohem_latest.pth"
    torch.save(
        {
            "config_dict": {"network": {"model_name": "annn", "backbone": "deepbase_resnet101_dilated8",
                                        "norm_type": "encsync_batchnorm"},
                            "data": {"num_classes": 19, "input_mode": "BGR"},
                            "normalize": {"div_value": 1.0, "mean": [102.9801, 115.9465, 122.7717],
                                          "std": [1.0, 1.0, 1.0]}},
            "state_dict": official32,
            "runner_state": {"iters": 60000, "last_iters": 59000, "epoch": 322, "last_epoch": 321,
                             "performance": np.float64(0.7991), "max_performance": np.float64(0.7991),
                             "val_loss": 0.1874, "min_val_loss": 0},
        },
        official_file,
        _use_new_zipfile_serialization=False,  # torch 1.0.1 wrote the legacy format
    )  # fmt: skip
    mmseg_file = folder / "ann_r50-d8_cityscapes.pth"  # a neutral name: align_corners comes from the meta config
    meta = {"mmseg_version": "0.5.0+unknown", "config": mmseg_config(True), "CLASSES": ("road",) * 19, "iter": 40000}
    torch.save({"meta": meta, "state_dict": mmseg32}, mmseg_file)
    return {"official": official_file, "mmseg": mmseg_file}


def _check_file(path, raw, reference: torch.Tensor) -> None:
    """``load_model(path)`` is a float32 eval model matching ``reference`` to 1e-4, and to 1e-6 in float64."""
    model = load_model(path)
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    _assert_logits(_logits(model, imagenet_normalised(raw).float()), reference, atol=1e-4, rtol=1e-4)
    _assert_logits(_logits(model.double(), imagenet_normalised(raw)), reference)  # the weights round-trip exactly


def test_convert_checkpoint_writes_models_load_model_reads(
    source_files, raw, tmp_path, official_reference, mmseg_reference
):
    config = convert_checkpoint(source_files["official"], "official", tmp_path / "official.pt")
    assert config["stem"] == "official" and config["backbone"] == DEPTH and config["align_corners"] is True
    _check_file(tmp_path / "official.pt", raw, official_reference)
    config = convert_checkpoint(source_files["mmseg"], "mmseg", tmp_path / "mmseg.pt")
    assert config["stem"] == "mmseg" and config["aux_width"] == 256 and config["align_corners"] is True
    _check_file(tmp_path / "mmseg.pt", raw, mmseg_reference(True))


def test_cli_converts_and_tells_what_it_built(source_files, raw, tmp_path, capsys, mmseg_reference):
    from anncore.__main__ import main

    # the file's meta config says align_corners=True; the flag overrides it
    argv = ["convert", "--from", "mmseg", "--no-align-corners", str(source_files["mmseg"]), str(tmp_path / "m.pt")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert DEPTH in out and "mmseg" in out, out
    _check_file(tmp_path / "m.pt", raw, mmseg_reference(False))


# --------------------------------------------------------------------------------------------------------------------
# 4. what does not fit is refused with one line


def _cli_error(argv: list[str], capsys) -> str:
    from anncore.__main__ import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("python -m anncore convert: error: ") and "Traceback" not in captured.err
    return lines[0]


def test_cli_refuses_a_truncated_file(tmp_path, capsys):
    whole = tmp_path / "whole.pth"
    torch.save({"state_dict": {"module.cls.weight": torch.zeros(19, 512, 1, 1)}}, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    line = _cli_error(["convert", "--from", "official", str(cut), str(tmp_path / "out.pt")], capsys)
    assert "not a readable" in line and "cut.pth" in line
    assert not (tmp_path / "out.pt").exists()


def test_cli_refuses_an_mmseg_file_read_as_official(source_files, tmp_path, capsys):
    src = source_files["mmseg"]
    line = _cli_error(["convert", "--from", "official", str(src), str(tmp_path / "out.pt")], capsys)
    assert "assumed the official layout, but the keys are mmseg's" in line and "--from mmseg" in line, line
    assert not (tmp_path / "out.pt").exists()


def test_an_official_state_dict_read_as_mmseg_is_refused(official64):
    with pytest.raises(BadInput, match="mmseg") as err:
        convert_state_dict(official64, "mmseg")
    assert "\n" not in str(err.value) and "fusion.stages.0." in str(err.value)


@pytest.mark.parametrize("source", ["official", "mmseg"])
def test_a_renamed_classifier_key_is_named(official64, mmseg64, source):
    state = dict(official64 if source == "official" else mmseg64)
    key, prefix = ("cls.weight", "module.") if source == "official" else ("decode_head.conv_seg.weight", "")
    state[f"{prefix}classifier.weight"] = state.pop(f"{prefix}{key}")  # the official files keep DataParallel's prefix
    with pytest.raises(BadInput) as err:
        convert_state_dict(state, source)
    message = str(err.value)
    assert f"no classifier ({key})" in message and "does not know: ['classifier.weight']" in message, message


def _has_run(numbers: list[int], run: tuple[int, ...]) -> bool:
    return any(tuple(numbers[i : i + len(run)]) == run for i in range(len(numbers) - len(run) + 1))


@pytest.mark.parametrize(
    ("source_key", "our_key", "bad_shape"),
    [
        ("fusion.stages.0.f_value.weight", "head.afnb.attention.f_value.weight", (255, 1024, 1, 1)),
        ("backbone.layer2.1.conv2.weight", "backbone.layer2.1.conv2.weight", (128, 128, 1, 1)),
    ],
)
def test_a_mis_shaped_tensor_is_named_with_both_shapes(official64, source_key, our_key, bad_shape):
    state = dict(official64)
    good_shape = tuple(state[f"module.{source_key}"].shape)
    state[f"module.{source_key}"] = torch.zeros(bad_shape, dtype=torch.float64)
    with pytest.raises(BadInput) as err:
        convert_state_dict(state, "official")
    message = str(err.value)
    assert "\n" not in message
    assert source_key in message, message  # the file's own name for it
    numbers = [int(n) for n in re.findall(r"\d+", message)]
    assert _has_run(numbers, bad_shape) and _has_run(numbers, good_shape), message


def test_evaluate_and_the_explorer_run_on_a_converted_model(source_files, tmp_path, capsys):
    """What a converted checkpoint is for: `evaluate` scores it and the explorer draws its attention."""
    import json

    import numpy as np
    from PIL import Image

    from anncore.__main__ import main
    from anncore.data.synthetic import write_synthetic_cityscapes

    convert_checkpoint(source_files["official"], "official", tmp_path / "official.pt")
    data = write_synthetic_cityscapes(tmp_path / "data", train=1, val=1, height=64, width=128)
    argv = ["evaluate", "--checkpoint", str(tmp_path / "official.pt"), "--data-root", str(data)]
    assert main([*argv, "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    assert 0 <= json.loads((tmp_path / "eval" / "metrics.json").read_text())["pixel_acc"] <= 1
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(tmp_path / "photo.png")
    argv = ["explore", "--checkpoint", str(tmp_path / "official.pt"), str(tmp_path / "photo.png")]
    assert main([*argv, "--out", str(tmp_path / "figures"), "--cells", "1", "--device", "cpu"]) == 0
    assert sorted(p.name.split("_")[1] for p in (tmp_path / "figures").glob("*.png")) == ["AFNB", "APNB"]
    capsys.readouterr()
