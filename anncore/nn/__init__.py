"""The attention blocks, the paper's contribution: attention itself (naive and fused), pyramid sampling, and the
non-local block, APNB and AFNB built on them (paper Sec. 3), plus the one conv-BN-ReLU unit they share.

Imports only torch and :mod:`anncore.errors`: a reader can take this folder alone into another project.
"""

from anncore.nn.attention import ATTN_IMPLEMENTATIONS, attention, attention_weights
from anncore.nn.blocks import AFNB, APNB, NonLocal2d, SelfAttention2d
from anncore.nn.pyramid import effective_attention, num_anchors, pooling_matrix, pyramid_pool

__all__ = [
    "AFNB",
    "APNB",
    "ATTN_IMPLEMENTATIONS",
    "NonLocal2d",
    "SelfAttention2d",
    "attention",
    "attention_weights",
    "effective_attention",
    "num_anchors",
    "pooling_matrix",
    "pyramid_pool",
]
