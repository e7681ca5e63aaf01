"""Writing disk outputs with qemu-img and checking them with `qemu-img info` (what the consumers read)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from builder import run
from builder.errors import StageFailed


def info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """`qemu-img info --output=json`; with `fmt`, the image is read as that format instead of probed."""
    argv: list[str | Path] = ["qemu-img", "info", "--output=json"]
    if fmt is not None:
        argv += ["-f", fmt]
    data: dict[str, Any] = json.loads(run.run([*argv, path]).out)
    return data


def convert(
    src: Path,
    dest: Path,
    fmt: str,
    options: Sequence[str] = (),
    *,
    compress: bool = False,
    existing: bool = False,
) -> None:
    """Convert the raw disk `src` to `fmt` (zero regions stay unallocated). `existing`: write into a `dest`
    already created (qemu-img create) and still all zeroes."""
    argv: list[str | Path] = ["qemu-img", "convert", "-f", "raw", "-O", fmt]
    if options:
        argv += ["-o", ",".join(options)]
    if compress:
        argv.append("-c")
    if existing:
        argv += ["-n", "--target-is-zero"]
    run.run([*argv, src, dest])


def expect(path: Path, found: dict[str, Any], fmt: str, virtual_size: int) -> None:
    if found.get("format") != fmt:
        raise StageFailed(f"qemu-img reads {path.name} as {found.get('format')}, expected {fmt}")
    if found.get("virtual-size") != virtual_size:
        raise StageFailed(
            f"{path.name} has virtual size {found.get('virtual-size')}, expected {virtual_size}"
        )


def check_consistency(path: Path, fmt: str) -> None:
    """`qemu-img check`: the metadata (qcow2 refcounts, vmdk grain tables) is consistent."""
    run.run(["qemu-img", "check", "-f", fmt, path])


def fail(path: Path, what: str) -> NoReturn:
    raise StageFailed(f"{path.name} {what}")
