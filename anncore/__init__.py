"""anncore: Asymmetric Non-local Neural Networks for Semantic Segmentation (Zhu et al., ICCV 2019), readable.

The blocks are importable from the package root; the rest lives in modules named for what they hold.
"""

from anncore.attention import ATTN_IMPLEMENTATIONS, attention, attention_weights
from anncore.blocks import AFNB, APNB, NonLocal2d, SelfAttention2d
from anncore.env import pick_device
from anncore.pyramid import effective_attention, num_anchors, pooling_matrix, pyramid_pool

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
    "pick_device",
    "pooling_matrix",
    "pyramid_pool",
]
__version__ = "0.1.0"
