"""Sizes for people: one formatter for every message that prints a size ("3.3 GiB", "501 MiB", "12 B")."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human(size: int | float) -> str:
    """Binary units, one decimal at most ("1.5 KiB", "4 GiB"); bytes below 1 KiB as they are."""
    value = float(size)
    if abs(value) < 1024:
        return f"{int(value)} B"
    unit = _UNITS[0]
    for index, unit in enumerate(_UNITS):  # noqa: B007 (the unit the loop stops at is the answer)
        value /= 1024
        if abs(value) < 1024 or index == len(_UNITS) - 1:
            break
    text = f"{value:.1f}"
    # 1023.96 KiB rounds to "1024.0": say the next unit instead.
    if text.startswith("1024") and unit != _UNITS[-1]:
        return f"1 {_UNITS[_UNITS.index(unit) + 1]}"
    return f"{text.removesuffix('.0')} {unit}"


def rate(bytes_per_second: float) -> str:
    return f"{human(bytes_per_second)}/s"
