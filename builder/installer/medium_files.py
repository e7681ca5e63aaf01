"""What the installer reads from its medium: `imgbuild/` with the payload and install.conf.

install.conf (sourced by init.sh) records what the build knows about the disk: its size, the sha256 of the
data the installer writes, and the root partition (always the last one, as the planner lays disks out) with
its filesystem type, which decides how it is grown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from builder import run
from builder.errors import ImgbuildError
from builder.installer.payload import Payload, write_payload

MEDIUM_DIR = "imgbuild"
ROOT_TYPES = {
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",  # root x86_64
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",  # root aarch64
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4",  # Linux data (a blueprint's own root partition)
}


class NoRootPartition(ImgbuildError):
    """The disk's last partition is not a Linux root the installer can grow."""


@dataclass(frozen=True)
class RootPartition:
    number: int
    fstype: str  # ext4, xfs, btrfs


def root_partition(disk: Path) -> RootPartition:
    table = json.loads(run.run(["sfdisk", "--json", disk]).out)["partitiontable"]
    parts = sorted(table["partitions"], key=lambda p: int(p["start"]))
    if not parts or str(parts[-1]["type"]).upper() not in ROOT_TYPES:
        raise NoRootPartition(f"{disk}: the last partition is not a Linux root partition")
    last = parts[-1]
    number = int(str(last["node"]).removeprefix(str(disk)))
    sector = int(table.get("sectorsize", 512))
    probe = run.run(
        ["blkid", "-p", "-O", str(int(last["start"]) * sector), "-o", "value", "-s", "TYPE", disk],
        check=False,
    )
    return RootPartition(number, probe.out.strip() or "unknown")


def write_medium_files(disk: Path, dest: Path) -> tuple[Payload, RootPartition]:
    """Fill `dest` (the medium's `imgbuild/` directory) from the raw `disk`."""
    dest.mkdir(parents=True, exist_ok=True)
    root = root_partition(disk)
    payload = write_payload(disk, dest)
    (dest / "install.conf").write_text(
        f"IMAGE_SIZE={payload.image_size}\n"
        f"IMAGE_SHA256={payload.sha256}\n"
        f"ROOT_PART={root.number}\n"
        f"ROOT_FS={root.fstype}\n"
    )
    return payload, root
