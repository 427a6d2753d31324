"""anncore: Asymmetric Non-local Neural Networks for Semantic Segmentation (Zhu et al., ICCV 2019), readable.

The blocks are importable from the package root; the rest lives in modules named for what they hold.
"""

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from anncore.device import pick_device
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
    "pick_device",
    "pooling_matrix",
    "pyramid_pool",
]


def _version() -> str:
    """The version ``pyproject.toml`` gives, its one source: from the installed metadata, or, for a source tree on
    ``PYTHONPATH`` that was never installed, from the ``pyproject.toml`` beside the package."""
    try:
        return version("anncore")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        if not pyproject.is_file():
            return "unknown"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])


__version__ = _version()
