"""The attention core shared by the non-local block, APNB and AFNB.

Every block in this project reduces to one computation (paper Eq. 1-2, official ``_SelfAttentionBlock``)::

    sim     = softmax(Ck ** -0.5 * Q @ K^T, dim=-1)    # (B, N, S)
    context = sim @ V                                 # (B, N, Cv)

with queries ``Q: (B, N, Ck)``, keys ``K: (B, S, Ck)`` and values ``V: (B, S, Cv)``. ``S = N`` for the non-local
block and ``S = 110`` anchors for APNB/AFNB. Two interchangeable implementations compute it, chosen by
``attn_implementation`` (the name PyTorch users know from Hugging Face's models; here also the training config's
field and ``--attn-implementation`` flag, and the key a checkpoint records it under):

``naive``
    the official code's explicit ``matmul -> softmax -> matmul``; materialises the ``(B, N, S)`` score matrix.
``sdpa``
    ``torch.nn.functional.scaled_dot_product_attention`` on ``(B, 1, N, C)`` tensors, which lets PyTorch pick a fused
    kernel (flash / memory-efficient / cuDNN) that never stores the score matrix. Its default scale is
    ``1 / sqrt(Ck)``, the same as ANN's.

An implementation may also name one SDPA backend (``flash``, ``efficient``, ``cudnn``, ``math``); it is then forced
through ``torch.nn.attention.sdpa_kernel`` and raises if that backend cannot run the inputs, never falling back
silently. ``auto`` resolves to ``sdpa``: PyTorch's dispatcher always has at least its math kernel, so ``sdpa`` runs
wherever ``naive`` does, and is never slower in memory.
"""

from __future__ import annotations

import warnings
from typing import Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from anncore.errors import BadInput

AttnImplementation = Literal["auto", "naive", "sdpa", "flash", "efficient", "cudnn", "math"]
ATTN_IMPLEMENTATIONS: tuple[str, ...] = get_args(AttnImplementation)

SDPA_BACKENDS: dict[str, SDPBackend] = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def check_attn_implementation(name: str) -> AttnImplementation:
    """Return ``name`` if it names an attention implementation, else raise a ``BadInput`` listing the valid names."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise BadInput(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {name!r}")
    return cast(AttnImplementation, name)


def resolve_attn_implementation(name: str) -> str:
    """The implementation that really runs for a requested one: ``auto`` becomes ``sdpa``, every other name stays."""
    return "sdpa" if check_attn_implementation(name) == "auto" else name


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            f"attention expects q (B, N, Ck), k (B, S, Ck), v (B, S, Cv); got ranks {q.dim()}, {k.dim()}, {v.dim()}"
        )
    if q.shape[0] != k.shape[0] or k.shape[0] != v.shape[0]:
        raise ValueError(f"batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k need the same channels Ck: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if k.shape[1] != v.shape[1]:
        raise ValueError(f"k and v need the same number of positions S: k {tuple(k.shape)}, v {tuple(v.shape)}")


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The explicit attention matrix ``softmax(Ck^-1/2 q k^T)`` of shape ``(B, N, S)``; rows sum to one.

    This is the official code's ``sim_map``. It is O(N*S) memory: pass a few query rows only when S = N is large.
    """
    scale = q.shape[-1] ** -0.5
    return torch.softmax(torch.bmm(q, k.transpose(1, 2)) * scale, dim=-1)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Fused kernels want (B, heads, N, C) with a contiguous last dimension; a single head here.
    out = F.scaled_dot_product_attention(
        q.unsqueeze(1).contiguous(), k.unsqueeze(1).contiguous(), v.unsqueeze(1).contiguous()
    )
    return out.squeeze(1)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_implementation: AttnImplementation = "auto"
) -> tuple[torch.Tensor, str]:
    """Compute ``softmax(Ck^-1/2 q k^T) v`` by the requested implementation (module docstring).

    Args:
        q: queries ``(B, N, Ck)``.
        k: keys ``(B, S, Ck)``.
        v: values ``(B, S, Cv)``.
        attn_implementation: one of :data:`ATTN_IMPLEMENTATIONS`.

    Returns:
        ``(context, ran)``: the context ``(B, N, Cv)`` and the name of the implementation that ran
        (``naive``, ``sdpa`` or the forced backend).

    Raises:
        RuntimeError: a forced SDPA backend cannot run these inputs (device, dtype or head size); the message names
            the backend and the inputs.
    """
    _check_qkv(q, k, v)
    ran = resolve_attn_implementation(attn_implementation)
    if ran == "naive":
        return torch.bmm(attention_weights(q, k), v), ran
    if ran == "sdpa":
        return _sdpa(q, k, v), ran
    try:
        with sdpa_kernel([SDPA_BACKENDS[ran]]):
            return _sdpa(q, k, v), ran
    except RuntimeError as err:
        raise RuntimeError(
            f"SDPA backend {ran!r} cannot run q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
            f"({q.dtype} on {q.device}); choose attn_implementation='sdpa' to let PyTorch pick a backend. "
            f"PyTorch said: {err}"
        ) from err


def sdpa_backend_report(
    device: torch.device | str, dtype: torch.dtype = torch.float32, channels: int = 64, n: int = 16
) -> tuple[dict[str, bool], dict[str, str]]:
    """Which SDPA backends run ``attention(q, q, q)`` with ``q (1, n, channels)`` on ``device`` in ``dtype``, and,
    for those that cannot, PyTorch's reasons (its warnings, else the error's last line).

    Each backend is forced in turn on a real call, so the answer reflects this build, device and dtype, not a list.
    """
    q = torch.randn(1, n, channels, device=device, dtype=dtype)
    runs, why = {}, {}
    for name in SDPA_BACKENDS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                attention(q, q, q, attn_implementation=name)  # type: ignore[arg-type]
                runs[name] = True
            except RuntimeError as err:
                runs[name] = False
                reasons = [str(w.message).splitlines()[0] for w in caught] or [str(err).splitlines()[-1]]
                why[name] = " | ".join(dict.fromkeys(reasons))[:400]
    return runs, why


def available_sdpa_backends(device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict[str, bool]:
    """Which SDPA backends run a small ANN-shaped problem (Ck = Cv = 64) on ``device`` in ``dtype``
    (:func:`sdpa_backend_report`)."""
    return sdpa_backend_report(device, dtype)[0]
