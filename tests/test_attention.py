"""The attention core: naive and SDPA implementations against each other and against a float64 reference."""

import pytest
import torch

from anncore.nn.attention import (
    ATTN_IMPLEMENTATIONS,
    attention,
    attention_weights,
    available_sdpa_backends,
    resolve_attn_implementation,
)


def reference(q, k, v):
    """Textbook attention in float64, written independently of anncore."""
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bnc,bsc->bns", q, k) / q.shape[-1] ** 0.5
    return torch.einsum("bns,bsc->bnc", scores.softmax(-1), v)


CASES = [(35, 110, 16, 16), (7, 7, 8, 24), (1, 3, 4, 4)]


@pytest.mark.parametrize(
    "impl,n,s,ck,cv",
    [
        (impl, *case)
        for impl in ("naive", "sdpa", "auto", "math", "flash")
        for case in CASES
        if impl != "flash" or case[2] == case[3]
    ],  # flash needs Ck == Cv
)
def test_implementations_match_reference(impl, n, s, ck, cv):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, n, ck, generator=g), torch.randn(2, s, ck, generator=g)
    v = torch.randn(2, s, cv, generator=g)
    out, ran = attention(q, k, v, impl)
    assert ran == resolve_attn_implementation(impl)
    torch.testing.assert_close(out.double(), reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_weights_are_a_softmax_with_ann_scale():
    q, k = torch.randn(1, 5, 16, dtype=torch.float64), torch.randn(1, 9, 16, dtype=torch.float64)
    w = attention_weights(q, k)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 5, dtype=torch.float64))
    # log-ratios of weights are the scaled score differences: 1/sqrt(Ck) = 1/4 here
    logw = w.log()
    torch.testing.assert_close(logw[0, 0, 1] - logw[0, 0, 0], (q[0, 0] @ (k[0, 1] - k[0, 0])) / 4)


def test_forced_backend_that_cannot_run_raises():
    available = available_sdpa_backends("cpu")
    missing = [name for name, ok in available.items() if not ok]
    assert missing, "expected at least one SDPA backend (cudnn) to be unavailable on CPU"
    q = torch.randn(1, 4, 8)
    with pytest.raises(RuntimeError, match=missing[0]):
        attention(q, q, q, missing[0])


def test_unknown_implementation_and_bad_shapes():
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        attention(q, q, q, "fast")
    with pytest.raises(ValueError, match="same channels"):
        attention(q, torch.randn(1, 4, 6), q)
    with pytest.raises(ValueError, match="number of positions"):
        attention(q, q, torch.randn(1, 5, 8))
    assert set(ATTN_IMPLEMENTATIONS) >= {"auto", "naive", "sdpa"}


def test_gradients_agree_between_implementations():
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(2, 13, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    grads = {}
    for impl in ("naive", "sdpa"):
        out, _ = attention(*tensors, impl)
        grads[impl] = torch.autograd.grad(out.square().sum(), tensors)
    for a, b in zip(grads["naive"], grads["sdpa"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
