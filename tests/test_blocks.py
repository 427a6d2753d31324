"""NonLocal2d, APNB and AFNB against independent computations, not just shapes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from anncore import AFNB, APNB, NonLocal2d, effective_attention
from anncore.nn.pyramid import pyramid_pool

SHAPES = [(9, 13), (7, 5), (3, 3), (1, 2), (8, 8)]  # odd, below the 8x8 grid, and a single row


def make(cls, *args, impl="naive", seed=0, dtype=torch.float32, **kwargs):
    """A block in eval mode with its zero-initialised W randomised, so that attention matters in the output."""
    torch.manual_seed(seed)
    block = cls(*args, attn_implementation=impl, **kwargs).to(dtype).eval()
    nn.init.normal_(block.attention.W.weight, std=0.5)
    nn.init.normal_(block.attention.W.bias, std=0.5)
    for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial running stats
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    return block


def inputs(cls, h, w, dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(h * 100 + w)
    if cls is AFNB:
        shapes = [(2, 6, h, w), (2, 10, h, w)]
    else:
        shapes = [(2, 6, h, w)]
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=requires_grad) for s in shapes]


BLOCKS = {
    NonLocal2d: dict(in_channels=6, out_channels=6, key_channels=4, value_channels=5),
    APNB: dict(in_channels=6, out_channels=6, key_channels=4, value_channels=5),
    AFNB: dict(low_in_channels=6, high_in_channels=10, out_channels=7, key_channels=4, value_channels=5),
}


@pytest.mark.parametrize("cls", list(BLOCKS))
@pytest.mark.parametrize("h,w", SHAPES)
def test_naive_and_sdpa_agree_in_output_and_gradient(cls, h, w):
    outs, grads = {}, {}
    for impl in ("naive", "sdpa"):
        block = make(cls, **BLOCKS[cls], impl=impl)
        xs = inputs(cls, h, w, requires_grad=True)
        out = block(*xs)
        assert block.last_attn_implementation == impl
        outs[impl] = out
        grads[impl] = torch.autograd.grad(out.square().sum(), [*xs, *block.parameters()])
    torch.testing.assert_close(outs["naive"], outs["sdpa"], atol=1e-5, rtol=0)
    for a, b in zip(grads["naive"], grads["sdpa"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cls", list(BLOCKS))
@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_gradcheck_float64(cls, impl):
    block = make(cls, **BLOCKS[cls], impl=impl, dtype=torch.float64)
    xs = inputs(cls, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *x: block(*x), xs)


@pytest.mark.parametrize("cls", [APNB, AFNB])
@pytest.mark.parametrize("h,w", SHAPES)
def test_pyramid_block_is_a_non_local_block_with_effective_weights(cls, h, w):
    """Paper Sec. 3 (pooling is linear): APNB/AFNB == non-local attention with w_p = sum_j a_j / |cell_j|."""
    block = make(cls, **BLOCKS[cls], dtype=torch.float64)
    xs = inputs(cls, h, w, dtype=torch.float64)
    low, high = (xs[0], xs[0]) if cls is APNB else xs
    out, anchors = block(*xs, return_attention=True)
    assert anchors.shape == (2, h * w, 110)
    pixel_weights = effective_attention(anchors, h, w)
    values = block.attention.f_value(low).flatten(2).transpose(1, 2)  # every pixel, no pooling
    context = (pixel_weights @ values).transpose(1, 2).reshape(2, -1, h, w)
    expected = block.fuse(torch.cat([block.attention.W(context), high], dim=1))
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)


def test_non_local_block_matches_explicit_formula():
    """NonLocal2d against the N x N computation written out with einsum (OCNet base-OC)."""
    block = make(NonLocal2d, **BLOCKS[NonLocal2d], dtype=torch.float64, impl="sdpa")
    (x,) = inputs(NonLocal2d, 5, 6, dtype=torch.float64)
    att = block.attention
    q = att.f_key(x).flatten(2)  # (B, Ck, N); query and key share f_key
    v = att.f_value(x).flatten(2)
    sim = torch.softmax(torch.einsum("bci,bcj->bij", q, q) / q.shape[1] ** 0.5, dim=-1)
    context = torch.einsum("bij,bcj->bci", sim, v).reshape(2, -1, 5, 6)
    expected = block.fuse(torch.cat([att.W(context), x], dim=1))
    out, weights = block(x, return_attention=True)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(weights, sim, atol=1e-12, rtol=0)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), cls=st.sampled_from([APNB, AFNB]))
def test_anchor_count_and_rows(h, w, cls):
    block = make(cls, **BLOCKS[cls], impl="sdpa")
    out, weights = block(*inputs(cls, h, w), return_attention=True)
    assert weights.shape == (2, h * w, 110)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, h * w))
    assert out.shape == (2, BLOCKS[cls]["out_channels"], h, w)


@pytest.mark.parametrize("cls", list(BLOCKS))
def test_fresh_attention_branch_contributes_exactly_zero(cls):
    torch.manual_seed(0)
    block = cls(**BLOCKS[cls]).eval()
    xs = inputs(cls, 6, 7)
    low, high = (xs[0], xs[0]) if cls is not AFNB else xs
    branch = block.attention(low, high)
    assert torch.equal(branch, torch.zeros_like(branch))
    expected = block.fuse(torch.cat([torch.zeros_like(branch), high], dim=1))
    assert torch.equal(block(*xs), expected)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_apnb_parameter_count_matches_official():
    assert count(APNB(512, 512, 256, 256, 0.05)) == 920_576


def test_parameter_counts_by_hand():
    """conv = in*out + out (bias), BN = 2*channels; APNB shares f_query = f_key, AFNB does not."""
    cin, cout, ck, cv = 512, 512, 256, 256
    apnb = (cin * ck + ck + 2 * ck) + (cin * cv + cv) + (cv * cout + cout) + ((cout + cin) * cout + cout + 2 * cout)
    assert count(APNB(cin, cout, ck, cv)) == apnb
    assert count(NonLocal2d(cin, cout, ck, cv)) == apnb  # same weights, no pooling
    low, high, out = 1024, 2048, 2048
    afnb = (
        (low * ck + ck + 2 * ck)
        + (high * ck + ck + 2 * ck)
        + (low * cv + cv)
        + (cv * out + out)
        + ((out + high) * out + out + 2 * out)
    )
    assert count(AFNB(low, high, out, ck, cv)) == afnb
    block = APNB(8, 8, 4, 4)
    assert block.attention.f_query is block.attention.f_key
    fusion = AFNB(8, 8, 8, 4, 4)
    assert fusion.attention.f_query is not fusion.attention.f_key
    assert not any(isinstance(m, nn.ReLU) for m in fusion.fuse)  # the official asymmetry
    assert any(isinstance(m, nn.ReLU) for m in block.fuse)


def test_bad_inputs_name_expected_and_received_shapes():
    block = APNB(6, 6, 4, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 6, H, W\), got \(6, 5, 5\)"):
        block(torch.randn(6, 5, 5))
    with pytest.raises(ValueError, match=r"got \(1, 3, 5, 5\)"):
        block(torch.randn(1, 3, 5, 5))
    fusion = AFNB(6, 10, 7, 4, 4)
    with pytest.raises(ValueError, match=r"low \(1, 6, 5, 5\) and high \(1, 10, 4, 5\)"):
        fusion(torch.randn(1, 6, 5, 5), torch.randn(1, 10, 4, 5))
    with pytest.raises(ValueError, match="high must have shape"):
        fusion(torch.randn(1, 6, 5, 5), torch.randn(1, 6, 5, 5))
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        APNB(6, 6, attn_implementation="fused")
    with pytest.raises(ValueError, match="pool_sizes"):
        APNB(6, 6, pool_sizes=())


@pytest.mark.parametrize("cls", list(BLOCKS))
def test_attention_rows_equal_rows_of_the_full_matrix(cls):
    block = make(cls, **BLOCKS[cls], impl="sdpa")
    xs = inputs(cls, 6, 7)
    low, high = (xs[0], xs[0]) if cls is not AFNB else xs
    _, full = block(*xs, return_attention=True)
    rows = [0, 17, 41]
    torch.testing.assert_close(block.attention.attention_rows(low, high, rows), full[:, rows], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", list(BLOCKS))
def test_attention_rows_in_train_mode_leave_the_running_statistics_alone(cls):
    """An inspection of a block in train mode normalises with the batch's statistics, as its forward does, but
    updates no BatchNorm buffer (it once did, twice for the shared query/key projection)."""
    block = make(cls, **BLOCKS[cls], impl="naive").train()
    xs = inputs(cls, 6, 7)
    low, high = (xs[0], xs[0]) if cls is not AFNB else xs
    before = {name: buffer.clone() for name, buffer in block.named_buffers()}
    assert any(name.endswith("num_batches_tracked") for name in before)
    rows = [0, 17, 41]
    got = block.attention.attention_rows(low, high, rows)
    block.attention.project(low, high)
    for name, buffer in block.named_buffers():
        assert torch.equal(buffer, before[name]), name
    _, full = block(*xs, return_attention=True)  # the forward does update them: its batch statistics are the same
    torch.testing.assert_close(got, full[:, rows], atol=1e-6, rtol=0)
    assert not torch.equal(block.attention.f_key[1].running_mean, before["attention.f_key.1.running_mean"])


@pytest.mark.parametrize("cls", list(BLOCKS))
def test_attention_rows_in_eval_mode_are_the_projections_scored(cls):
    block = make(cls, **BLOCKS[cls])
    xs = inputs(cls, 6, 7)
    low, high = (xs[0], xs[0]) if cls is not AFNB else xs
    a, rows = block.attention, [3, 40]
    query = a.f_query(high).flatten(2).transpose(1, 2)
    key_map = a.f_key(low)
    key = (
        key_map.flatten(2).transpose(1, 2)
        if a.pool_sizes is None
        else pyramid_pool(key_map, a.pool_sizes).transpose(1, 2)
    )
    expected = torch.softmax(query[:, rows] @ key.transpose(1, 2) * a.f_key[0].out_channels ** -0.5, dim=-1)
    torch.testing.assert_close(a.attention_rows(low, high, rows), expected, atol=1e-6, rtol=0)
