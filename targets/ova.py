"""ova: an OVF package in one tar, what VMware and VirtualBox import.

The OVF spec (DSP0243, "OVF packages") fixes the tar's order: the descriptor first, then the manifest, then
the disks, so that an importer reading the stream sees what to expect before the data. The tar is POSIX
ustar (the spec's format). The manifest (.mf) holds one `SHA256(name)= hex` line per file (ovftool's
format, which VirtualBox and `sha256sum -c` read). The disk is the streamOptimized vmdk of the vmdk target.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder import run
from targets import ovf, qemu_img
from targets.base import Target, TargetPlan
from targets.platforms import Platform
from targets.vmdk import check_stream_optimized, write_stream_optimized

DESCRIPTOR = "disk.ovf"
MANIFEST = "disk.mf"
DISK = "disk.vmdk"
USTAR_MAX = 8 << 30  # ustar's 11 octal digits of member size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Ova(Target, name="ova"):
    help = "an OVA (OVF descriptor, manifest, streamOptimized vmdk) for VMware and VirtualBox"
    filename = "disk.ova"
    format = "ova"
    mime = "application/x-virtualbox-ova"
    platform = Platform.VMWARE

    @classmethod
    def stage_options(cls, plan: TargetPlan) -> dict[str, Any]:
        return {**super().stage_options(plan), "name": plan.name}

    def write(self, disk: Path, dest: Path, options: Mapping[str, Any], scratch: Path) -> None:
        vmdk = scratch / DISK
        write_stream_optimized(disk, vmdk)
        if vmdk.stat().st_size >= USTAR_MAX:
            qemu_img.fail(vmdk, "is too large for an OVA's ustar archive (8 GiB)")
        machine = ovf.Machine(options["name"], DISK, vmdk.stat().st_size, disk.stat().st_size)
        (scratch / DESCRIPTOR).write_bytes(ovf.descriptor(machine))
        (scratch / MANIFEST).write_text(
            "".join(f"SHA256({name})= {_sha256(scratch / name)}\n" for name in (DESCRIPTOR, DISK))
        )
        run.run(["tar", "--format=ustar", "-cf", dest, "-C", scratch, DESCRIPTOR, MANIFEST, DISK])

    def check(self, dest: Path, disk: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        names = [line for line in run.run(["tar", "-tf", dest]).out.splitlines() if line]
        if names != [DESCRIPTOR, MANIFEST, DISK]:
            qemu_img.fail(dest, f"holds {names}, expected {[DESCRIPTOR, MANIFEST, DISK]} in that order")
        unpacked = Path(tempfile.mkdtemp(prefix=f".{dest.name}.check-", dir=dest.parent))
        try:
            run.run(["tar", "-xf", dest, "-C", unpacked])
            sums = run.run(["sha256sum", "--check", "--strict", MANIFEST], cwd=unpacked, check=False)
            if sums.returncode != 0:
                qemu_img.fail(dest, f"has a manifest that does not match its files: {sums.out.strip()}")
            root = ovf.parse((unpacked / DESCRIPTOR).read_bytes())
            href, size, capacity = ovf.disk_reference(root)
            vmdk = unpacked / DISK
            if (href, size, capacity) != (DISK, vmdk.stat().st_size, disk.stat().st_size):
                qemu_img.fail(dest, f"has a descriptor that names {href} ({size} bytes, capacity {capacity})")
            record = check_stream_optimized(vmdk, disk)
        finally:
            shutil.rmtree(unpacked)
        return {**record, "contains": names}
