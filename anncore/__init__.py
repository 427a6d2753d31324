"""anncore: Asymmetric Non-local Neural Networks for Semantic Segmentation (Zhu et al., ICCV 2019), readable.

The blocks (:mod:`anncore.nn`) and ``pick_device`` are importable from the package root; the rest lives in the
layers' subpackages (the README's layout table).
"""

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from anncore.device import pick_device as pick_device  # the device rule, re-exported
from anncore.nn import *  # noqa: F403 - the blocks, re-exported at the root
from anncore.nn import __all__ as _BLOCKS

__all__ = sorted([*_BLOCKS, "pick_device"])


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
