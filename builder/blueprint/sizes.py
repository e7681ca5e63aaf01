"""Sizes as Image Builder writes them: an int of bytes, or a string with an optional decimal unit."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

UNITS = {
    "": 1,
    "B": 1,
    "kB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
    "TB": 1000**4,
    "TiB": 1024**4,
}

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")

# Larger than any disk anyone will build; it keeps decimal arithmetic and later size sums bounded.
MAX_SIZE = 1024**5 * 64


class SizeError(ValueError):
    pass


def parse_size(value: object) -> int:
    """Bytes from `20 GiB`, `512MiB`, `1.5 GB`, `1000` or an int; SizeError says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SizeError(f"must be a size, not {type(value).__name__}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(value)
        if match is None:
            raise SizeError(f'{value!r} is not a size (such as "20 GiB" or "512MiB")')
        number, unit = match.groups()
        if unit not in UNITS:
            raise SizeError(
                f"unknown unit {unit!r} in {value!r}: use one of {' '.join(u for u in UNITS if u)}"
            )
        try:
            exact = Decimal(number) * UNITS[unit]
        except InvalidOperation as e:  # pragma: no cover - the regex admits only digits
            raise SizeError(f"{value!r} is not a size") from e
        if exact > MAX_SIZE:
            raise SizeError(f"{value!r} is larger than 64 PiB")
        if exact != exact.to_integral_value():
            raise SizeError(f"{value!r} is not a whole number of bytes")
        size = int(exact)
    if size < 0:
        raise SizeError("must not be negative")
    if size > MAX_SIZE:
        raise SizeError(f"{size} is larger than 64 PiB")
    return size
