"""vhd: a fixed VHD for Azure.

Azure takes only fixed VHDs (the raw disk followed by a 512-byte footer) whose virtual size is a whole number
of MiB. qemu-img's `force_size` writes the size itself into the footer; without it qemu rounds the size to a
CHS geometry, which is not MiB-aligned. A disk whose size is not a whole MiB is written into a VHD created one
MiB-rounded size larger (the zero tail is what Azure would add itself).

A fixed VHD has no header: `qemu-img info` without a format reads it as raw (the footer is the last 512
bytes of "disk"); read as vpc it shows the VHD's own size. Both are checked, and the footer's disk type.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder import run
from targets import qemu_img
from targets.base import Target
from targets.platforms import Platform

MiB = 1 << 20
FOOTER = 512
OPTIONS = ("subformat=fixed", "force_size=on")
FIXED_DISK_TYPE = 2  # the footer's "disk type" field: 2 fixed, 3 dynamic, 4 differencing


def vhd_size(disk_size: int) -> int:
    return -(-disk_size // MiB) * MiB


class Vhd(Target, name="vhd"):
    help = "a fixed VHD for Azure (virtual size a whole MiB)"
    filename = "disk.vhd"
    format = "vpc"
    mime = "application/x-vhd"
    platform = Platform.AZURE

    def write(self, disk: Path, dest: Path, options: Mapping[str, Any], scratch: Path) -> None:
        size = vhd_size(disk.stat().st_size)
        run.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", ",".join(OPTIONS), dest, str(size)])
        qemu_img.convert(disk, dest, "vpc", existing=True)

    def check(self, dest: Path, disk: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        size = vhd_size(disk.stat().st_size)
        qemu_img.expect(dest, qemu_img.info(dest, "vpc"), "vpc", size)
        qemu_img.expect(dest, qemu_img.info(dest), "raw", size + FOOTER)
        with dest.open("rb") as f:
            f.seek(-FOOTER, 2)
            footer = f.read(FOOTER)
        cookie, (current_size,), (disk_type,) = (
            footer[:8],
            struct.unpack(">Q", footer[48:56]),
            struct.unpack(">I", footer[60:64]),
        )
        if cookie != b"conectix" or disk_type != FIXED_DISK_TYPE:
            qemu_img.fail(dest, f"is not a fixed VHD (cookie {cookie!r}, disk type {disk_type})")
        if current_size != size or size % MiB:
            qemu_img.fail(dest, f"has a footer size of {current_size}, expected {size} (a whole MiB)")
        return {"virtual_size": size, "subformat": "fixed"}
