"""``python -m anncore train`` command lines for the tests that run training in a subprocess."""

from __future__ import annotations


def flags(**settings: object) -> list[str]:
    """TrainConfig fields as ``python -m anncore train`` flags (booleans as ``--x`` / ``--no-x``, lists spread)."""
    out: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out += [flag, *map(str, value if isinstance(value, list) else [value])]
    return out
