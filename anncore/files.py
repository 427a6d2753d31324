"""The files every command writes, written one way: strict JSON, UTC time stamps, and one test for a full disk.

:func:`write_json` is the one JSON writer of the project: strict JSON (NaN and infinities become ``null``, which
every parser accepts, where Python's default writes bare ``NaN`` tokens), written atomically (a temporary file in the
same folder, then ``os.replace``), so a reader never sees half a document. :func:`utc_stamp` names run folders and
result files (``20261130T200201Z``), the same on every machine whatever its time zone. :func:`disk_full` tells a full
disk from other write errors, however a library wrapped it. Which folder a command may write into, and what it may
replace there, is :mod:`anncore.outputs`."""

from __future__ import annotations

import errno
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
    text = json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:  # a full disk, say: name the file, and leave no temporary behind
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err
    return path


def utc_stamp() -> str:
    """The current time in UTC as ``YYYYMMDDTHHMMSSZ`` (ISO 8601 basic format)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it arose from is ``ENOSPC`` (``torch.save`` and PIL report a failed write as
    another error, with the ``OSError`` only as its cause or context)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False
