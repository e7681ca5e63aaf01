"""raw: the disk as it is, sparse (dd it to a USB stick or a machine's disk; what other tools convert)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from targets import rawdisk
from targets.base import Target
from targets.platforms import Platform


class Raw(Target, name="raw"):
    help = "a raw (sparse) disk image, for dd to a disk or any hypervisor"
    filename = "disk.raw"
    format = "raw"
    mime = "application/octet-stream"
    platform = Platform.QEMU

    def write(self, disk: Path, dest: Path, options: Mapping[str, Any], scratch: Path) -> None:
        rawdisk.copy(disk, dest)

    def check(self, dest: Path, disk: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        return dict(rawdisk.check(dest, disk))
