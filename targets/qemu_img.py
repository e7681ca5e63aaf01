"""Writing and checking disk outputs with qemu-img."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder import run
from builder.errors import StageFailed
from targets.formats import FormatSpec


def info(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run.run(["qemu-img", "info", "--output=json", path]).out)
    return data


def convert(raw: Path, dest: Path, spec: FormatSpec, *, compress: bool = False) -> None:
    """Convert the raw work disk to `spec`'s format (sparse regions stay unallocated)."""
    argv: list[str | Path] = ["qemu-img", "convert", "-f", "raw", "-O", spec.qemu_format]
    if spec.create_options:
        argv += ["-o", ",".join(spec.create_options)]
    if compress and spec.compressible:
        argv.append("-c")
    run.run([*argv, raw, dest])


def check(path: Path, spec: FormatSpec, virtual_size: int) -> None:
    """The output is in the right format with the right virtual size, and qcow2 passes `qemu-img check`."""
    found = info(path)
    if found.get("format") != spec.qemu_format:
        raise StageFailed(f"{path.name} is {found.get('format')}, expected {spec.qemu_format}")
    if found.get("virtual-size") != virtual_size:
        raise StageFailed(
            f"{path.name} has virtual size {found.get('virtual-size')}, expected {virtual_size}"
        )
    if spec.qemu_format == "qcow2":
        if found.get("format-specific", {}).get("data", {}).get("compat") != "1.1":
            raise StageFailed(f"{path.name} is not qcow2 compat 1.1")
        run.run(["qemu-img", "check", "-f", "qcow2", path])
