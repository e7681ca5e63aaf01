"""vmdk: a streamOptimized VMDK, what VMware (vSphere, Workstation) and EC2's disk import take.

streamOptimized is the compressed, stream-readable subformat; `compat6` and the lsilogic adapter are what
vSphere expects of an imported disk (coreos-assembler writes the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from targets import qemu_img
from targets.base import Target
from targets.platforms import Platform

OPTIONS = ("adapter_type=lsilogic", "subformat=streamOptimized", "compat6")


def write_stream_optimized(disk: Path, dest: Path) -> None:
    qemu_img.convert(disk, dest, "vmdk", OPTIONS)


def check_stream_optimized(dest: Path, disk: Path) -> dict[str, Any]:
    found = qemu_img.info(dest)
    qemu_img.expect(dest, found, "vmdk", disk.stat().st_size)
    create_type = found.get("format-specific", {}).get("data", {}).get("create-type")
    if create_type != "streamOptimized":
        qemu_img.fail(dest, f"is a {create_type} vmdk, expected streamOptimized")
    qemu_img.check_consistency(dest, "vmdk")
    return {"virtual_size": int(found["virtual-size"]), "subformat": create_type}


class Vmdk(Target, name="vmdk"):
    help = "a streamOptimized VMDK for VMware and AWS disk import"
    filename = "disk.vmdk"
    format = "vmdk"
    mime = "application/x-vmdk"
    platform = Platform.VMWARE

    def write(self, disk: Path, dest: Path, options: Mapping[str, Any], scratch: Path) -> None:
        write_stream_optimized(disk, dest)

    def check(self, dest: Path, disk: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        return check_stream_optimized(dest, disk)
