"""qcow2: the disk for qemu/KVM, libvirt and OpenStack (compat 1.1, optionally compressed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from targets import qemu_img
from targets.base import Target, TargetPlan
from targets.platforms import Platform


class Qcow2(Target, name="qcow2"):
    help = "a qcow2 disk for qemu/KVM, libvirt and OpenStack"
    filename = "disk.qcow2"
    format = "qcow2"
    mime = "application/x-qemu-disk"
    platform = Platform.QEMU

    @classmethod
    def stage_options(cls, plan: TargetPlan) -> dict[str, Any]:
        return {**super().stage_options(plan), "compression": plan.compression}

    def write(self, disk: Path, dest: Path, options: Mapping[str, Any], scratch: Path) -> None:
        qemu_img.convert(disk, dest, "qcow2", ["compat=1.1"], compress=options["compression"])

    def check(self, dest: Path, disk: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        found = qemu_img.info(dest)
        qemu_img.expect(dest, found, "qcow2", disk.stat().st_size)
        if found.get("format-specific", {}).get("data", {}).get("compat") != "1.1":
            qemu_img.fail(dest, "is not qcow2 compat 1.1")
        qemu_img.check_consistency(dest, "qcow2")
        return {"virtual_size": found["virtual-size"]}
