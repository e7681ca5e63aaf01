"""GPT partitioning of a disk image file with pyparted.

pyparted (libparted 3.5 in bookworm) lays out the partitions and names them; it cannot set a partition's
type GUID, unique GUID or the disk GUID, so gptfields.py writes those into its table afterwards (and
`sgdisk --verify` checks the result). Everything is given by the caller (the planner derives the GUIDs
from a seed), so the same plan gives the same bytes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder import run
from builder.disk import gptfields
from builder.errors import ImgbuildError
from builder.sizefmt import human

SECTOR = 512
ALIGNMENT = 1024 * 1024  # 1 MiB, as bootc-image-builder and every modern partitioner use
GPT_RESERVED_SECTORS = 34  # protective MBR + header + 32 sectors of entries (the backup copy mirrors it)

# GPT partition type GUIDs (those bootc-image-builder uses).
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
XBOOTLDR = "BC13C2FF-59E6-4262-A352-B275FD6F7172"
LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
ROOT_AARCH64 = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
LINUX_SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"

# GPT attribute bit 2: "legacy BIOS bootable".
LEGACY_BIOS_BOOTABLE_BIT = 2


class PartitionError(ImgbuildError):
    """A partition layout that does not fit or does not make sense."""


@dataclass(frozen=True)
class PartitionSpec:
    name: str  # the GPT partition name (PARTLABEL)
    type_guid: str
    size: int | None  # bytes, rounded up to 1 MiB; None: fill the rest of the disk (last partition only)
    uuid: str  # the partition's unique GUID (PARTUUID)
    fs_label: str = ""
    bootable: bool = False  # legacy BIOS bootable attribute


@dataclass(frozen=True)
class Placed:
    number: int  # 1-based, as the kernel and GRUB's (hd0,gptN) count
    spec: PartitionSpec
    start: int  # bytes from the start of the disk
    size: int  # bytes

    @property
    def end(self) -> int:
        return self.start + self.size


def _align_up(value: int, alignment: int = ALIGNMENT) -> int:
    return -(-value // alignment) * alignment


def _canonical_guid(text: str, what: str) -> str:
    try:
        return str(uuid.UUID(text)).upper()
    except ValueError:
        raise PartitionError(f"{what} is not a GUID: {text!r}") from None


def layout(size: int, partitions: Sequence[PartitionSpec]) -> tuple[Placed, ...]:
    """Where each partition goes: 1 MiB aligned, in order, the `None`-sized one filling the rest."""
    if not partitions:
        raise PartitionError("a disk needs at least one partition")
    if size % SECTOR:
        raise PartitionError(f"disk size {size} is not a multiple of {SECTOR} bytes")
    for spec in partitions[:-1]:
        if spec.size is None:
            raise PartitionError(f"partition {spec.name!r}: only the last partition can fill the disk")
    # The last usable byte: the backup GPT takes the last 33 sectors; end on a 1 MiB boundary.
    usable_end = (size - (GPT_RESERVED_SECTORS - 1) * SECTOR) // ALIGNMENT * ALIGNMENT
    placed: list[Placed] = []
    start = ALIGNMENT
    for number, spec in enumerate(partitions, start=1):
        if spec.size is not None and spec.size <= 0:
            raise PartitionError(f"partition {spec.name!r} has size {spec.size}")
        length = usable_end - start if spec.size is None else _align_up(spec.size)
        if length <= 0 or start + length > usable_end:
            raise PartitionError(
                f"partition {spec.name!r} does not fit in a disk of {human(size)}",
                hint="make the disk larger or the partitions smaller",
            )
        placed.append(Placed(number, spec, start, length))
        start += length
    return tuple(placed)


def create_gpt(
    image: Path, size: int, partitions: Sequence[PartitionSpec], *, disk_guid: str
) -> tuple[Placed, ...]:
    """Create `image` as a sparse file of `size` bytes holding a GPT with `partitions`.

    The file is replaced if it exists; on failure it is removed.
    """
    import parted  # Debian's python3-parted, through the venv's system site packages

    placed = layout(size, partitions)
    disk_guid = _canonical_guid(disk_guid, "the disk GUID")
    guids = [_canonical_guid(p.spec.uuid, f"partition {p.spec.name!r}'s GUID") for p in placed]
    types = [_canonical_guid(p.spec.type_guid, f"partition {p.spec.name!r}'s type") for p in placed]
    with open(image, "wb") as f:
        f.truncate(size)
    try:
        device = parted.getDevice(os.fspath(image))
        disk = parted.freshDisk(device, "gpt")
        for p in placed:
            geometry = parted.Geometry(device=device, start=p.start // SECTOR, length=p.size // SECTOR)
            partition = parted.Partition(disk=disk, type=parted.PARTITION_NORMAL, geometry=geometry)
            disk.addPartition(partition, constraint=parted.Constraint(exactGeom=geometry))
            partition.set_name(p.spec.name)
        disk.commitToDevice()
        gptfields.set_fields(
            image,
            disk_guid,
            {
                p.number: gptfields.EntryFields(
                    type_guid, guid, (1 << LEGACY_BIOS_BOOTABLE_BIT) if p.spec.bootable else 0
                )
                for p, guid, type_guid in zip(placed, guids, types, strict=True)
            },
        )
        verify_gpt(image)
    except BaseException:
        image.unlink(missing_ok=True)
        raise
    return placed


def verify_gpt(image: Path) -> None:
    """`sgdisk --verify` must find no problem."""
    out = run.run(["sgdisk", "--verify", image]).out
    if "No problems found" not in out:
        raise PartitionError(f"the partition table of {image} has problems: {' '.join(out.split())}")
