"""Reading a disk the installer wrote: its GPT (backup header at the disk's end) and its root filesystem's
size, from the bytes (a qcow2 is converted to a sparse raw file first)."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from builder import run

SECTOR = 512


@dataclass(frozen=True)
class Installed:
    disk_size: int
    root_start: int
    root_size: int
    root_fs_size: int  # bytes the ext4 superblock says the filesystem has
    backup_gpt_at_end: bool  # the backup GPT header is the disk's last sector
    verify: str  # sfdisk --verify's report
    partitions: dict[int, str]  # sha256 of every partition but the root (the last)


def ext4_size(raw: Path, offset: int) -> int:
    with open(raw, "rb") as f:
        f.seek(offset + 1024)
        sb = f.read(1024)
    if struct.unpack_from("<H", sb, 0x38)[0] != 0xEF53:
        raise AssertionError(f"no ext4 superblock at {offset}")
    lo, log, hi = (int(struct.unpack_from("<I", sb, at)[0]) for at in (4, 24, 0x150))
    return (lo | hi << 32) * (1024 << log)


def partition_hashes(raw: Path) -> dict[int, str]:
    """sha256 of each partition of the raw disk but the last (the root, which the installer grows)."""
    table = json.loads(run.run(["sfdisk", "--json", raw]).out)["partitiontable"]
    found = {}
    with open(raw, "rb") as f:
        for number, part in enumerate(table["partitions"][:-1], start=1):
            f.seek(int(part["start"]) * SECTOR)
            digest = hashlib.sha256()
            left = int(part["size"]) * SECTOR
            while left:
                chunk = f.read(min(left, 1 << 20))
                digest.update(chunk)
                left -= len(chunk)
            found[number] = digest.hexdigest()
    return found


def read_installed(qcow2: Path, workdir: Path) -> Installed:
    raw = workdir / f"{qcow2.stem}.raw"
    run.run(["qemu-img", "convert", "-O", "raw", qcow2, raw])
    try:
        table = json.loads(run.run(["sfdisk", "--json", raw]).out)["partitiontable"]
        root = table["partitions"][-1]
        size = raw.stat().st_size
        with open(raw, "rb") as f:
            f.seek(size - SECTOR)
            last = f.read(8)
        verify = run.run(["sfdisk", "--verify", raw], check=False).out
        return Installed(
            disk_size=size,
            root_start=int(root["start"]) * SECTOR,
            root_size=int(root["size"]) * SECTOR,
            root_fs_size=ext4_size(raw, int(root["start"]) * SECTOR),
            backup_gpt_at_end=last == b"EFI PART",
            verify=verify,
            partitions=partition_hashes(raw),
        )
    finally:
        raw.unlink(missing_ok=True)


def allocated_bytes(qcow2: Path) -> int:
    """Bytes of data the guest wrote to a qcow2 (0 for a disk nothing touched)."""
    info = json.loads(run.run(["qemu-img", "map", "--output=json", qcow2]).out)
    return sum(int(e["length"]) for e in info if e.get("data"))
