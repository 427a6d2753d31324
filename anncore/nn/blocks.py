"""NonLocal2d, APNB and AFNB as in the official ANN code (MendelXu/ANN) — paper Sec. 3.

All three are one mechanism, :class:`SelfAttention2d` (the official ``_SelfAttentionBlock``), followed by a fusion
step that concatenates the attention output with the block's input and mixes them with a 1x1 conv:

==============  =================  ====================  ===============================================
block           query from         keys/values           fusion after ``cat([attention, input])``
==============  =================  ====================  ===============================================
NonLocal2d      x (shared q/k)     all N pixels of x     Conv1x1 -> BN -> ReLU -> Dropout2d  (OCNet base-OC)
APNB            x (shared q/k)     110 anchors of x      Conv1x1 -> BN -> ReLU -> Dropout2d
AFNB            high level         110 anchors of low    Conv1x1 -> BN -> Dropout2d  (no ReLU, as official)
==============  =================  ====================  ===============================================

Deliberate deviations from the official code, each small:

* The official fusion conv takes ``2 * in_channels`` and so only works when ``out_channels == in_channels``; here it
  takes ``out_channels + in_channels``, which is the same number in every configuration the official code can run.
* The official block has a ``scale`` option (max-pool before attention) that ANN always sets to 1; it is left out.
* The official ``stages`` list (several attention blocks summed) always holds one block in ANN; it is one block here.
* APNB and the non-local block share one projection for query and key; the official code (and mmsegmentation) runs
  it twice per forward on the same input, here once. Outputs are identical, but in training the official BatchNorm
  of that projection gets two running-statistics updates per step (effective momentum ``1 - 0.9**2 = 0.19``) where
  this gets one (0.1). Trained weights agree; the running statistics of that one BN settle at slightly different
  values over a run. Evaluation of a converted checkpoint (:mod:`anncore.models.convert`) is unaffected: its statistics
  come with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from anncore.nn.attention import AttnImplementation, attention, attention_weights, check_attn_implementation
from anncore.nn.layers import conv_bn_relu
from anncore.nn.pyramid import DEFAULT_POOL_SIZES, check_pool_sizes, pyramid_pool


def check_feature(x: torch.Tensor, name: str, channels: int, block: str = "") -> None:
    """Raise a ``ValueError`` unless ``x`` is a non-empty floating-point ``(B, channels, H, W)``; the message names
    ``block`` (the class that was called), ``name`` and both shapes, or the dtype (an integer image fed as it was
    read would otherwise fail inside the first convolution, in torch's words, with no word of the block)."""
    where = f"{block} input " if block else ""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}{name} must be a torch.Tensor of shape (B, {channels}, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{where}{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{where}{name} is empty: shape {tuple(x.shape)}; B, H and W must all be >= 1")
    if not x.is_floating_point():
        raise ValueError(
            f"{where}{name} must be a floating-point tensor (float32, float16, bfloat16 or float64), got {x.dtype}; "
            "convert it first, e.g. x.float()"
        )


def check_channels(**channels: int) -> None:
    """Raise a ``ValueError`` naming the first argument that is not a positive int (a block with 0 channels would
    build, then fail deep inside a convolution)."""
    for name, value in channels.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)`` (free for channels_last inputs; the SDPA path makes it contiguous)."""
    return x.flatten(2).transpose(1, 2)


class SelfAttention2d(nn.Module):
    """The attention branch of every block (official ``_SelfAttentionBlock``, paper Eq. 1-2 with pyramid sampling).

    ``query = f_query(x_high)``, ``key = P(f_key(x_low))``, ``value = P(f_value(x_low))`` where ``P`` is pyramid
    sampling (:func:`~anncore.nn.pyramid.pyramid_pool`) or the identity when ``pool_sizes`` is ``None`` (non-local).
    The output is ``W(softmax(Ck^-1/2 query key^T) value)``, with ``W`` a 1x1 conv whose weight and bias start at
    zero, so a fresh branch contributes exactly nothing.

    Args:
        low_in_channels: channels of the key/value input.
        high_in_channels: channels of the query input; ignored when ``share_query_key`` (then it equals
            ``low_in_channels`` and ``f_query is f_key``, the OCNet/APNB parameter saving).
        key_channels: ``Ck``.
        value_channels: ``Cv``.
        out_channels: channels of ``W``'s output.
        pool_sizes: pyramid for keys/values, or ``None`` to attend to every pixel.
        share_query_key: use one module for query and key (APNB, non-local) or two (AFNB).
        attn_implementation: how attention is computed (``auto``, ``naive``, ``sdpa`` or one SDPA backend), see
            :mod:`anncore.nn.attention`.
    """

    def __init__(
        self,
        low_in_channels: int,
        high_in_channels: int,
        key_channels: int,
        value_channels: int,
        out_channels: int,
        pool_sizes: Sequence[int] | None,
        share_query_key: bool,
        attn_implementation: AttnImplementation = "auto",
    ) -> None:
        super().__init__()
        check_channels(
            low_in_channels=low_in_channels, high_in_channels=high_in_channels, key_channels=key_channels,
            value_channels=value_channels, out_channels=out_channels,
        )  # fmt: skip
        self.low_in_channels = low_in_channels
        self.high_in_channels = low_in_channels if share_query_key else high_in_channels
        self.pool_sizes = None if pool_sizes is None else check_pool_sizes(pool_sizes)
        self.attn_implementation = check_attn_implementation(attn_implementation)
        self.last_attn_implementation: str | None = None
        self.f_key = conv_bn_relu(low_in_channels, key_channels, 1, bias=True)
        self.f_query = self.f_key if share_query_key else conv_bn_relu(high_in_channels, key_channels, 1, bias=True)
        self.f_value = nn.Conv2d(low_in_channels, value_channels, 1)
        self.W = nn.Conv2d(value_channels, out_channels, 1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(cast(torch.Tensor, self.W.bias))  # a Conv2d built with bias=True (the default)

    def _sample(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, S, C)`` keys/values: the anchors, or every pixel for the non-local block."""
        return _tokens(x) if self.pool_sizes is None else pyramid_pool(x, self.pool_sizes).transpose(1, 2)

    def forward(
        self, low: torch.Tensor, high: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``low`` gives keys/values, ``high`` gives queries (the same tensor for APNB and non-local)."""
        b, _, h, w = high.shape
        key_map = self.f_key(low)
        # APNB and non-local share f_query = f_key on one input: project once (the official code projects twice).
        query_map = key_map if (self.f_query is self.f_key and low is high) else self.f_query(high)
        query, key = _tokens(query_map), self._sample(key_map)
        value = self._sample(self.f_value(low))
        context, self.last_attn_implementation = attention(query, key, value, self.attn_implementation)
        out = self.W(context.transpose(1, 2).reshape(b, -1, h, w))
        if return_attention:
            # Explicit weights, since a fused kernel returns none (recomputed on the naive implementation too: this is
            # for inspection, not training).
            return out, attention_weights(query, key)
        return out

    def attention_rows(self, low: torch.Tensor, high: torch.Tensor, rows: torch.Tensor | list[int]) -> torch.Tensor:
        """Attention weights of a few query pixels only: ``(B, len(rows), S)`` for flat indices ``rows`` into
        ``H*W``. Memory is O(len(rows) * S), so a non-local row at full resolution costs O(N), not O(N^2); the
        values equal the matching rows of ``forward(..., return_attention=True)``."""
        query, key = self.project(low, high)
        return attention_weights(query[:, torch.as_tensor(rows, device=high.device)], key)

    def project(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query of every pixel ``(B, H*W, Ck)`` and the keys ``(B, S, Ck)``: what :meth:`attention_rows`
        scores. Computing them once lets an explorer score any query row in ``O(S)`` (:mod:`anncore.analysis.probe`).

        An inspection, not a training step: in train mode the projections' BatchNorm normalises with the batch's
        statistics, as :meth:`forward` does, but its running statistics and ``num_batches_tracked`` stay as they
        were."""
        return _tokens(_without_state_update(self.f_query, high)), self._sample(_without_state_update(self.f_key, low))


def _without_state_update(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, but in train mode on copies of its buffers (BatchNorm's running statistics), so that the
    module's own buffers are left as they were; in eval mode, plainly ``module(x)``."""
    if not any(m.training for m in module.modules()):
        return cast(torch.Tensor, module(x))
    buffers = {name: buffer.clone() for name, buffer in module.named_buffers()}
    return cast(torch.Tensor, torch.func.functional_call(module, buffers, (x,)))


class _FusedAttentionBlock(nn.Module):
    """Shared forward of the three blocks: attention branch, then ``fuse(cat([attention, input]))``."""

    attention: SelfAttention2d
    fuse: nn.Sequential

    def _run(
        self, low: torch.Tensor, high: torch.Tensor, return_attention: bool
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if return_attention:
            context, weights = self.attention(low, high, return_attention=True)
            return self.fuse(torch.cat([context, high], dim=1)), weights
        return self.fuse(torch.cat([self.attention(low, high), high], dim=1))

    @property
    def last_attn_implementation(self) -> str | None:
        """The attention implementation that ran in the last forward (``naive``, ``sdpa`` or a forced backend)."""
        return self.attention.last_attn_implementation


class _SelfFusedBlock(_FusedAttentionBlock):
    """APNB and the non-local baseline: one input, shared query/key, fusion with ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        key_channels: int,
        value_channels: int,
        dropout: float,
        pool_sizes: Sequence[int] | None,
        attn_implementation: AttnImplementation,
    ) -> None:
        super().__init__()
        check_channels(
            in_channels=in_channels, out_channels=out_channels, key_channels=key_channels, value_channels=value_channels
        )
        self.in_channels = in_channels
        self.attention = SelfAttention2d(
            in_channels, in_channels, key_channels, value_channels, out_channels, pool_sizes, True, attn_implementation
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(out_channels + in_channels, out_channels, 1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``; with ``return_attention`` also the
        attention weights ``(B, H*W, S)``."""
        check_feature(x, "x", self.in_channels, type(self).__name__)
        return self._run(x, x, return_attention)


class NonLocal2d(_SelfFusedBlock):
    """The non-local baseline in ANN's form (OCNet "base OC"): APNB without pyramid sampling, ``S = N``.

    ``NonLocal2d(in_channels, out_channels, key_channels, value_channels, dropout)``; attention is ``(B, N, N)``.
    For the original Wang et al. (2018) embedded-Gaussian block with a residual sum see notebook 01.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        key_channels: int = 256,
        value_channels: int = 256,
        dropout: float = 0.05,
        attn_implementation: AttnImplementation = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, key_channels, value_channels, dropout, None, attn_implementation)


class APNB(_SelfFusedBlock):
    """Asymmetric Pyramid Non-local Block (paper Sec. 3.3, official ``APNB``).

    ``APNB(512, 512, 256, 256, 0.05)`` as in the network has 920,576 parameters, as the official block.
    ``forward(x, return_attention=True)`` also returns the anchor weights ``(B, H*W, S)``; turn them into per-pixel
    weights with :func:`anncore.nn.pyramid.effective_attention`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        key_channels: int = 256,
        value_channels: int = 256,
        dropout: float = 0.05,
        pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
        attn_implementation: AttnImplementation = "auto",
    ) -> None:
        super().__init__(
            in_channels, out_channels, key_channels, value_channels, dropout, pool_sizes, attn_implementation
        )


class AFNB(_FusedAttentionBlock):
    """Asymmetric Fusion Non-local Block (paper Sec. 3.4, official ``AFNB``).

    Queries from the high level (layer4), keys and values from the pyramid-sampled low level (layer3); the two
    maps must have the same spatial size (true at output stride 8). Fusion with the high level:
    ``Conv1x1(out + high -> out) -> BN -> Dropout2d``, without the ReLU that APNB has (an asymmetry of the official
    code, kept).
    """

    def __init__(
        self,
        low_in_channels: int,
        high_in_channels: int,
        out_channels: int,
        key_channels: int = 256,
        value_channels: int = 256,
        dropout: float = 0.05,
        pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
        attn_implementation: AttnImplementation = "auto",
    ) -> None:
        super().__init__()
        check_channels(
            low_in_channels=low_in_channels, high_in_channels=high_in_channels, out_channels=out_channels,
            key_channels=key_channels, value_channels=value_channels,
        )  # fmt: skip
        self.low_in_channels = low_in_channels
        self.high_in_channels = high_in_channels
        self.attention = SelfAttention2d(
            low_in_channels,
            high_in_channels,
            key_channels,
            value_channels,
            out_channels,
            pool_sizes,
            False,
            attn_implementation,
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(out_channels + high_in_channels, out_channels, 1),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )

    def forward(
        self, low: torch.Tensor, high: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``low: (B, low_in, H, W)``, ``high: (B, high_in, H, W)`` -> ``(B, out_channels, H, W)``; with
        ``return_attention`` also the anchor weights ``(B, H*W, S)``."""
        check_feature(low, "low", self.low_in_channels, "AFNB")
        check_feature(high, "high", self.high_in_channels, "AFNB")
        if low.shape[0] != high.shape[0] or low.shape[2:] != high.shape[2:]:
            raise ValueError(
                f"AFNB needs low and high of the same batch and spatial size (B, *, H, W); got low "
                f"{tuple(low.shape)} and high {tuple(high.shape)}"
            )
        return self._run(low, high, return_attention)
