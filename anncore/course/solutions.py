"""Reference solutions of the notebooks' exercises: open this file only when you are stuck.

A notebook never shows these. Each exercise's check (:func:`anncore.course.exercises.check`) judges the reader's own
function; while it is missing or wrong, the check runs the same test on the reference solution here (so every run of a
notebook, in CI too, proves each reference) and hands it to the cells below, saying so. Each function has the
signature of the exercise it solves and is named after it; the notebook and section are given in its docstring.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from anncore.data.labels import CLASS_NAMES, IGNORE_INDEX, LABELS, NUM_CLASSES
from anncore.models.network import ANN
from anncore.nn.attention import attention_weights
from anncore.nn.blocks import AFNB, APNB
from anncore.nn.pyramid import DEFAULT_POOL_SIZES, cell_bounds, pyramid_pool


def build_nonlocal(in_channels: int, out_channels: int, key_channels: int, value_channels: int) -> torch.nn.Module:
    """Notebook 01 §6: the layers ``NonLocal2d.__init__`` builds (the official ``_SelfAttentionBlock``), W at zero."""
    block = torch.nn.Module()
    block.attention = torch.nn.Module()
    block.attention.f_key = torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, key_channels, 1), torch.nn.BatchNorm2d(key_channels), torch.nn.ReLU()
    )
    block.attention.f_query = block.attention.f_key  # theta = phi: one module under both names
    block.attention.f_value = torch.nn.Conv2d(in_channels, value_channels, 1)
    block.attention.W = w_out = torch.nn.Conv2d(value_channels, out_channels, 1)
    torch.nn.init.zeros_(w_out.weight)
    torch.nn.init.zeros_(w_out.bias)  # type: ignore[arg-type]  # a Conv2d built with bias=True has one
    block.fuse = torch.nn.Sequential(
        torch.nn.Conv2d(out_channels + in_channels, out_channels, 1),
        torch.nn.BatchNorm2d(out_channels),
        torch.nn.ReLU(),
        torch.nn.Dropout2d(0.05),
    )
    return block.eval()


def attention_row(q_i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Notebook 01 §7: one query's softmax row over the keys, softmax_j(q_i . k_j / sqrt(Ck)), in O(S) memory."""
    return torch.softmax(k @ q_i / math.sqrt(q_i.shape[-1]), dim=-1)


def pyramid(x: torch.Tensor, sizes: tuple[int, ...] = (1, 3, 6, 8)) -> torch.Tensor:
    """Notebook 02 §2: pyramid sampling (paper Sec. 3.2), (B, C, H, W) -> (B, C, S), levels in the order of sizes."""
    return torch.cat([F.adaptive_avg_pool2d(x, n).flatten(2) for n in sizes], dim=2)


def apnb_from_scratch(x: torch.Tensor, block: APNB) -> tuple[torch.Tensor, torch.Tensor]:
    """Notebook 02 §3: APNB's forward in eval mode (paper Eq. 4-6 with the official fusion), ``block``'s weights."""
    b, _, h, w = x.shape
    key_map = block.attention.f_key(x)  # theta = phi: Conv1x1-BN-ReLU, (B, Ck, H, W)
    query = key_map.flatten(2).transpose(1, 2)  # Q: (B, N, Ck), every pixel
    key = pyramid(key_map)  # K^T: (B, Ck, S), the anchors
    value = pyramid(block.attention.f_value(x)).transpose(1, 2)  # V: (B, S, Cv)
    a = torch.softmax(query @ key / math.sqrt(key.shape[1]), dim=-1)  # A: (B, N, S)
    o = block.attention.W((a @ value).transpose(1, 2).reshape(b, -1, h, w))  # O = W(AV): (B, C_out, H, W)
    return block.fuse(torch.cat([o, x], dim=1)), a


def apnb_pixel_weight(anchor_weights: torch.Tensor, row: int, col: int, height: int, width: int) -> float:
    """Notebook 02 §6: the weight w_p = sum over the cells j containing p of a_j / |cell j| (w = aP)."""
    weight, offset = 0.0, 0
    for n in DEFAULT_POOL_SIZES:
        for i, (r0, r1) in enumerate(cell_bounds(height, n)):
            for j, (c0, c1) in enumerate(cell_bounds(width, n)):
                if r0 <= row < r1 and c0 <= col < c1:  # overlapping cells: a pixel can be in more than one
                    weight += anchor_weights[offset + i * n + j].item() / ((r1 - r0) * (c1 - c0))
        offset += n * n
    return weight


def afnb_from_scratch(low: torch.Tensor, high: torch.Tensor, block: AFNB) -> tuple[torch.Tensor, torch.Tensor]:
    """Notebook 03 §1: AFNB's forward in eval mode (paper Sec. 3.3; the official ``AFNB`` ends in BN, no ReLU)."""
    b, _, h, w = high.shape
    query = block.attention.f_query(high).flatten(2).transpose(1, 2)  # Q = theta(Y_h): (B, N, Ck)
    key = pyramid_pool(block.attention.f_key(low)).transpose(1, 2)  # K = P phi(Y_l): (B, S, Ck)
    value = pyramid_pool(block.attention.f_value(low)).transpose(1, 2)  # V = P gamma(Y_l): (B, S, Cv)
    a = attention_weights(query, key)  # A = softmax(Q K^T / sqrt(Ck)): (B, N, S)
    o = block.attention.W((a @ value).transpose(1, 2).reshape(b, -1, h, w))  # O = W(AV)
    conv, bn = block.fuse[0], block.fuse[1]
    return bn(conv(torch.cat([o, high], dim=1))), a


def afnb_parameters(low_in: int, high_in: int, out: int, key: int, value: int) -> int:
    """Notebook 03 §3: AFNB's learnable parameters (convolution weights and biases, BatchNorm scales and shifts)."""
    projections = (low_in + 1) * key + 2 * key + (high_in + 1) * key + 2 * key  # phi(Y_l), theta(Y_h): conv + BN
    value_and_w = (low_in + 1) * value + (value + 1) * out  # gamma(Y_l) and W: convolutions with bias
    fusion = (out + high_in + 1) * out + 2 * out  # conv over [O; Y_h] to out channels, then BN
    return projections + value_and_w + fusion


def attention_core_cost(
    batch: int, n: int, s: int, key_channels: int, value_channels: int, dtype: torch.dtype = torch.float32
) -> tuple[int, int]:
    """Notebook 04 §1: (FLOPs of Q K^T and A V at 2 per multiply-add, bytes of one (batch, n, s) score matrix)."""
    scores = batch * n * s * key_channels  # Q K^T: N x S entries, each a dot product over Ck
    mixing = batch * n * s * value_channels  # A V: N x Cv entries, each a sum over the S keys
    return 2 * (scores + mixing), batch * n * s * dtype.itemsize


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Notebook 05 §2: Cityscapes label ids -> train ids (0..18, 255 for every label id that is not evaluated)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[[LABELS[name].id for name in CLASS_NAMES]] = np.arange(NUM_CLASSES)  # train id k is CLASS_NAMES[k]
    return table[label_ids]


def ann_logits(model: ANN, images: torch.Tensor) -> torch.Tensor:
    """Notebook 06 §3: the network's main logits from its parts: backbone, AFNB, bottleneck, APNB or NL, classifier."""
    low, high = model.backbone(images)
    head = model.head
    blocks = head.blocks()
    x = blocks["AFNB"](low, high) if "AFNB" in blocks else high  # AFNB is the only block that reads low
    x = head.bottleneck(x)
    for name in ("APNB", "non-local"):
        if name in blocks:
            x = blocks[name](x)
    logits = head.cls(x)
    return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=model.align_corners)


def poly_lr(it: int, lr: float, iters: int, power: float, warmup: int = 0) -> float:
    """Notebook 07 §3: the poly learning rate of 0-based iteration ``it``, scaled by (it + 1) / warmup in warm-up."""
    rate = lr * (1 - it / iters) ** power
    if warmup and it < warmup:
        rate *= (it + 1) / warmup
    return rate


def miou_from_confusion(confusion: np.ndarray) -> float:
    """Notebook 08 §1: mean IoU over the classes with a non-empty union, as cityscapesscripts averages it."""
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def weight_on_region(pixel_map: torch.Tensor, mask: np.ndarray) -> float:
    """Notebook 09 §3: the weight of an (h, w) attention map on an (8h, 8w) mask, each cell by its coverage."""
    h, w = pixel_map.shape
    coverage = mask.reshape(h, 8, w, 8).mean(axis=(1, 3))  # the share of each cell's 8x8 block on the mask
    return float((pixel_map.double().cpu().numpy() * coverage).sum())
