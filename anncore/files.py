"""The one JSON writer of the project: strict JSON (NaN and infinities become ``null``, which every parser
accepts, where Python's default writes bare ``NaN`` tokens), written atomically (a temporary file in the same
folder, then ``os.replace``), so a reader never sees half a document."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` and tuples by lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(value: Any, path: str | Path) -> Path:
    """Write ``value`` to ``path`` as indented strict JSON (parent folders created), atomically; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
