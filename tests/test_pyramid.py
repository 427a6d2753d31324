"""Pyramid sampling and its exact matrix form."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anncore.nn.pyramid import cell_bounds, effective_attention, num_anchors, pooling_matrix, pyramid_pool


def test_paper_pyramid_has_110_anchors():
    assert num_anchors() == 110
    assert num_anchors((2, 4)) == 20


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 19), w=st.integers(1, 19), sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4))
def test_pooling_matrix_equals_adaptive_pooling(h, w, sizes):
    """The hand-built cell bounds reproduce torch's adaptive average pooling exactly, for any size (also H, W < 8)."""
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    pooled = pyramid_pool(x, sizes)
    assert pooled.shape == (2, 3, num_anchors(sizes))
    via_matrix = x.flatten(2) @ pooling_matrix(h, w, sizes, dtype=torch.float64).T
    torch.testing.assert_close(pooled, via_matrix, atol=1e-12, rtol=0)


def test_cells_overlap_when_size_does_not_divide():
    assert cell_bounds(7, 3) == [(0, 3), (2, 5), (4, 7)]
    assert cell_bounds(2, 3) == [(0, 1), (0, 2), (1, 2)]  # smaller than the grid: pixels repeat


def test_effective_attention_rows_sum_to_one_and_reproduce_context():
    a = torch.softmax(torch.randn(2, 5, 110, dtype=torch.float64), -1)
    w = effective_attention(a, 9, 11)
    assert w.shape == (2, 5, 99)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5, dtype=torch.float64))
    assert (w >= 0).all()
    v = torch.randn(2, 7, 9, 11, dtype=torch.float64)
    context_anchors = a @ pyramid_pool(v).transpose(1, 2)
    context_pixels = w @ v.flatten(2).transpose(1, 2)
    torch.testing.assert_close(context_anchors, context_pixels, atol=1e-12, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="pool_sizes"):
        pyramid_pool(torch.randn(1, 1, 4, 4), (1, 0))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        pyramid_pool(torch.randn(4, 4))
    with pytest.raises(ValueError, match="110"):
        effective_attention(torch.rand(1, 4, 100), 4, 4)
