"""The raw disk as an output (raw, ami, the disk.raw inside gce's archive): a sparse copy, and its checks."""

from __future__ import annotations

import json
from pathlib import Path

from builder import run
from targets import qemu_img

BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def copy(disk: Path, dest: Path) -> None:
    """A sparse copy (shared extents where the filesystem can): several outputs may read the same disk, and
    a user booting one output must not change another."""
    run.run(["cp", "--sparse=always", "--reflink=auto", disk, dest])


def check(dest: Path, disk: Path, boot_modes: tuple[str, ...] = ()) -> dict[str, int]:
    """qemu reads `dest` as a raw disk of the disk's size whose GPT (as sfdisk reads it) has the partitions
    each boot mode needs: a BIOS boot partition for bios, an ESP for uefi."""
    found = qemu_img.info(dest)
    qemu_img.expect(dest, found, "raw", disk.stat().st_size)
    table = json.loads(run.run(["sfdisk", "--json", dest]).out)["partitiontable"]
    if table.get("label") != "gpt":
        qemu_img.fail(dest, f"has a {table.get('label')} partition table, expected gpt")
    types = {str(p["type"]).upper() for p in table["partitions"]}
    for mode, guid, what in (("bios", BIOS_BOOT_GUID, "BIOS boot"), ("uefi", ESP_GUID, "EFI system")):
        if mode in boot_modes and guid not in types:
            qemu_img.fail(dest, f"boots with {mode} but has no {what} partition")
    return {"virtual_size": int(found["virtual-size"])}
