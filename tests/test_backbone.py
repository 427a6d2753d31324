"""Backbones: output stride 8, the two-level interface, and pretrained weights from a file the test writes."""

import warnings

import pytest
import torch
from torchvision.models import ResNet50_Weights, resnet50

import anncore.models.backbone as backbone_module
from anncore.models.backbone import ResNetBackbone, SmallBackbone, UntrainedBackboneWarning, build_backbone


def untrained(name="resnet50"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBackboneWarning)
        return ResNetBackbone(name)


def test_resnet_is_dilated_to_output_stride_8():
    net = untrained().eval()
    with torch.no_grad():
        low, high = net(torch.randn(1, 3, 64, 100))
    assert low.shape == (1, 1024, 8, 13) and high.shape == (1, 2048, 8, 13)
    assert (net.low_channels, net.high_channels) == (1024, 2048)
    assert net.layer3[1].conv2.dilation == (2, 2) and net.layer4[1].conv2.dilation == (4, 4)
    assert not any(k.startswith("fc.") for k in net.state_dict())


def test_small_backbone_interface_and_limited_receptive_field():
    net = SmallBackbone().eval()
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    low, high = net(x)
    assert low.shape == (1, net.low_channels, 32, 32) and high.shape == (1, net.high_channels, 32, 32)
    high[0, :, 16, 16].sum().backward()
    rows, cols = x.grad[0].abs().sum(0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 <= 79 and cols.max() - cols.min() + 1 <= 79  # docstring: 79-pixel field


def test_untrained_resnet_warns_that_cityscapes_needs_imagenet_weights():
    with pytest.warns(UntrainedBackboneWarning, match="ImageNet weights"):
        ResNetBackbone("resnet50")


def test_imagenet_uses_torchvision_weights_api_without_loading_here(monkeypatch):
    calls = []

    def fake_build(weights=None, **kwargs):
        calls.append((weights, kwargs))
        return resnet50(weights=None, **kwargs)

    monkeypatch.setitem(backbone_module._RESNETS, "resnet50", (fake_build, ResNet50_Weights.IMAGENET1K_V1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "untrained" warning with weights
        ResNetBackbone("resnet50", pretrained="imagenet")
    assert calls == [(ResNet50_Weights.IMAGENET1K_V1, {"replace_stride_with_dilation": [False, True, True]})]


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_local_checkpoint_with_module_prefix_and_fc_loads(tmp_path, wrapper):
    torch.manual_seed(1)
    source = resnet50(weights=None)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # a DataParallel save, fc included
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 90}, tmp_path / "r50.pth")
    net = ResNetBackbone("resnet50", pretrained=tmp_path / "r50.pth")
    loaded = net.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key


def test_timm_style_file_without_num_batches_tracked_loads(tmp_path):
    source = resnet50(weights=None).state_dict()
    torch.save({k: v for k, v in source.items() if "num_batches_tracked" not in k}, tmp_path / "timm.pth")
    net = ResNetBackbone("resnet50", pretrained=str(tmp_path / "timm.pth"))
    assert torch.equal(net.layer4[2].bn3.running_var, source["layer4.2.bn3.running_var"])


def test_missing_backbone_key_fails_loudly(tmp_path):
    state = resnet50(weights=None).state_dict()
    del state["layer4.2.conv3.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth.*1 backbone keys missing \['layer4\.2\.conv3\.weight'\]"):
        ResNetBackbone("resnet50", pretrained=tmp_path / "broken.pth")


def test_deeper_resnet_file_is_refused_with_its_extra_keys(tmp_path):
    state = resnet50(weights=None).state_dict()
    state["layer3.6.conv1.weight"] = torch.zeros(256, 1024, 1, 1)  # a resnet101 block resnet50 lacks
    torch.save(state, tmp_path / "r101ish.pth")
    with pytest.raises(ValueError, match=r"unexpected keys \['layer3\.6\.conv1\.weight'\]"):
        ResNetBackbone("resnet50", pretrained=tmp_path / "r101ish.pth")


def test_missing_file_and_bad_names():
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ResNetBackbone("resnet50", pretrained="nope.pth")
    with pytest.raises(ValueError, match="small backbone has no pretrained"):
        build_backbone("small", "imagenet")
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_backbone("resnet18")
