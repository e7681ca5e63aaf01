"""ami: the raw disk an Amazon Machine Image is registered from (the upload is builder/upload's work).

EC2 imports a raw disk as an EBS snapshot (ImportSnapshot, or direct EBS writes) and registers an AMI from
it; the registration needs the architecture and the boot mode (legacy-bios, uefi, or uefi-preferred when the
disk has both). This target writes and checks the disk and records what the upload needs: the disk's path,
its architecture and the boot modes its bootloader stage installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from targets import rawdisk
from targets.base import GiB, Target, TargetPlan
from targets.platforms import Platform


class Ami(Target, name="ami"):
    help = "the raw disk an AWS AMI is registered from"
    filename = "ami.raw"
    format = "raw"
    mime = "application/octet-stream"
    platform = Platform.AWS
    command = False  # `imgbuild ami REF` is builder/commands/upload.py: this target's build, then the upload
    size_alignment = (
        GiB  # EBS volumes are whole GiB: a disk of that size fills its volume, backup GPT at the end.
    )

    @classmethod
    def stage_options(cls, plan: TargetPlan) -> dict[str, Any]:
        return {**super().stage_options(plan), "boot_modes": list(plan.boot_modes)}

    def write(self, disk: Path, dest: Path, options: Mapping[str, Any], scratch: Path) -> None:
        rawdisk.copy(disk, dest)

    def check(self, dest: Path, disk: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        modes = tuple(options["boot_modes"])
        record: dict[str, Any] = dict(rawdisk.check(dest, disk, modes))
        record["disk"] = dest.name
        record["boot_modes"] = list(modes)
        return record
