"""Sizes, one syntax everywhere a user writes one: the command line (`--size`), blueprints and the service.

A size is a number and a unit: `10G`, `10GiB`, `10 GiB`, `512M`, `1.5 GB`. K, M, G, T alone are binary
(as qemu-img and truncate read them); kB, MB, GB, TB decimal; units are not case-sensitive. Bytes need an
explicit `B` (`4096B`): a bare number is refused, because tools disagree on what it means (bytes to
imgbuild's blueprints, MiB to composer-cli's --size). A blueprint's integer (TOML/JSON, not a string) stays a
number of bytes, as Image Builder defines it.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_KI, _MI, _GI, _TI = 1024, 1024**2, 1024**3, 1024**4
UNITS = {
    "b": 1,
    "k": _KI,
    "kib": _KI,
    "kb": 1000,
    "m": _MI,
    "mib": _MI,
    "mb": 1000**2,
    "g": _GI,
    "gib": _GI,
    "gb": 1000**3,
    "t": _TI,
    "tib": _TI,
    "tb": 1000**4,
}
SYNTAX = "a number and a unit: 10G, 10GiB, 10 GiB, 512M, 1.5 GB (bytes: 4096B)"

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")

# Larger than any disk anyone will build; it keeps decimal arithmetic and later size sums bounded.
MAX_SIZE = 1024**5 * 64


class SizeError(ValueError):
    pass


def parse_size(value: object) -> int:
    """Bytes from a size string (see the module doc) or a blueprint's int; SizeError says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SizeError(f"must be a size, not {type(value).__name__}")
    if isinstance(value, int):
        size = value
    else:
        size = _parse_text(value)
    if size < 0:
        raise SizeError("must not be negative")
    if size > MAX_SIZE:
        raise SizeError(f"{size} is larger than 64 PiB")
    return size


def _parse_text(value: str) -> int:
    match = _SIZE.fullmatch(value)
    if match is None:
        raise SizeError(f"{value!r} is not a size: write {SYNTAX}")
    number, unit = match.groups()
    if not unit:
        raise SizeError(f"{value!r} has no unit: write {number}G, {number}M or {number}B (bytes)")
    if unit.lower() not in UNITS:
        raise SizeError(f"unknown unit {unit!r} in {value!r}: use K M G T, KiB MiB GiB TiB, kB MB GB TB or B")
    try:
        exact = Decimal(number) * UNITS[unit.lower()]
    except InvalidOperation as e:  # pragma: no cover - the regex admits only digits
        raise SizeError(f"{value!r} is not a size") from e
    if exact > MAX_SIZE:
        raise SizeError(f"{value!r} is larger than 64 PiB")
    if exact != exact.to_integral_value():
        raise SizeError(f"{value!r} is not a whole number of bytes")
    return int(exact)
