"""What a training run writes into ``OUT`` besides its checkpoint: the files it owns, the ``log.jsonl`` of its
iterations and validations, and the ``metrics.json`` of a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anncore.files import json_safe

# ----------------------------------------------------------------------------------------------------------- data
#: The files a run writes into ``OUT`` (and :func:`clear_run` deletes).
RUN_FILES: tuple[str, ...] = ("checkpoint.pt", "log.jsonl", "metrics.json", "config.yaml")


def clear_run(out: str | Path) -> None:
    """Delete the files a previous training run wrote into ``out`` (nothing else), so a new run starts fresh."""
    for name in RUN_FILES:
        (Path(out) / name).unlink(missing_ok=True)


class RunLog:
    """``OUT/log.jsonl``, appended by rank 0 only; on resume, records after the checkpoint are dropped."""

    def __init__(self, path: Path, enabled: bool, keep_until: int | None) -> None:
        self.path, self.enabled = path, enabled
        if enabled and keep_until is not None and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if record.get("iter", 0) <= keep_until:
                    kept.append(line + "\n")
            path.write_text("".join(kept))
        elif enabled:
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(json_safe(record)) + "\n")


def read_metrics(path: Path) -> dict[str, Any] | None:
    """``OUT/metrics.json`` of a finished run, or ``None`` when it is missing or unreadable (cut short: the run then
    validates again and rewrites it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
