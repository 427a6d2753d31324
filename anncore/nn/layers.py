"""The one convolution unit the project builds its blocks, heads and small backbone from."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, *, bias: bool, stride: int = 1
) -> nn.Sequential:
    """``Conv2d(kernel_size, stride, padding=kernel_size // 2, bias) -> BatchNorm2d -> ReLU`` as ``nn.Sequential``
    (state-dict keys ``0.*``, ``1.*``). The official code puts a bias before its BatchNorms (``ModuleHelper.BNReLU``
    after ``nn.Conv2d(...)`` with the default ``bias=True``: the key/query projections and the head's 3x3 convs), so
    ``bias`` is explicit: ``True`` where the official checkpoints hold one, ``False`` in the small backbone."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )
