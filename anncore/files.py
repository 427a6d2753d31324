"""The files every command writes, written one way: strict JSON and UTC time stamps.

:func:`write_json` is the one JSON writer of the project: strict JSON (NaN and infinities become ``null``, which
every parser accepts, where Python's default writes bare ``NaN`` tokens), written atomically (a temporary file in the
same folder, then ``os.replace``), so a reader never sees half a document. :func:`utc_stamp` names run folders and
result files (``20261130T200201Z``), the same on every machine whatever its time zone."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
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


def utc_stamp() -> str:
    """The current time in UTC as ``YYYYMMDDTHHMMSSZ`` (ISO 8601 basic format)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
