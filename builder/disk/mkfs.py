"""Filesystems inside the partitions of a disk image file.

ext4 and vfat are made straight into the image file at the partition's offset (no loop device, no root);
xfs, btrfs and swap tools have no offset option, so they get a loop device of just that partition.
"""

from __future__ import annotations

import enum
import os
import re
import uuid as uuidlib
from pathlib import Path

from builder import run
from builder.devices import loop_device
from builder.disk.partition import SECTOR, Placed
from builder.errors import ImgbuildError

# ext4 features that bookworm's e2fsprogs 1.47 can enable (its built-in defaults do when /etc/mke2fs.conf
# is absent) but that GRUB 2.06 (metadata_csum_seed is an incompat feature it refuses) or the older
# e2fsprogs of the images' initramfs (orphan_file, unknown before 1.47) cannot read.
EXT4_DISABLED_FEATURES = ("^metadata_csum_seed", "^orphan_file")

# Label limits of the on-disk formats.
LABEL_MAX = {"ext4": 16, "xfs": 12, "btrfs": 255, "vfat": 11, "swap": 16}

# FAT32 (what UEFI asks of an ESP) needs at least 65525 clusters; with mkfs.fat's 4 KiB clusters that is
# 256 MiB plus the FATs. A smaller "FAT32" is read as FAT16 by mtools (and some firmware). The FAT type is
# always given: left to itself, mkfs.fat picks it from the size of the whole image file, not the partition.
FAT32_MIN_SIZE = 260 * 1024 * 1024
FAT16_MIN_SIZE = 16 * 1024 * 1024


class FsType(enum.StrEnum):
    EXT4 = "ext4"
    XFS = "xfs"
    BTRFS = "btrfs"
    VFAT = "vfat"
    SWAP = "swap"


class FilesystemError(ImgbuildError):
    """A filesystem that cannot be made as asked."""


def fat_volume_id(uuid: str) -> str:
    """The 8 hex digits of a FAT volume id, from `XXXX-XXXX` or from a full UUID (its first 8 digits)."""
    text = uuid.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}", text):
        return text.replace("-", "").upper()
    try:
        return uuidlib.UUID(text).hex[:8].upper()
    except ValueError:
        raise FilesystemError(f"not a FAT volume id or UUID: {uuid!r}") from None


def fat_uuid(uuid: str) -> str:
    """The UUID of a FAT filesystem as blkid and GRUB spell it: `XXXX-XXXX`."""
    volid = fat_volume_id(uuid)
    return f"{volid[:4]}-{volid[4:]}"


def make_filesystem(
    image: Path,
    part: Placed,
    fstype: str,
    *,
    uuid: str,
    label: str,
    root_dir: Path | None = None,
) -> None:
    """Make a filesystem of `fstype` in partition `part` of `image`.

    `root_dir` populates ext4 (`mke2fs -d`) or btrfs (`--rootdir`) from a directory without mounting.
    """
    try:
        kind = FsType(fstype)
    except ValueError:
        raise FilesystemError(
            f"unsupported filesystem type {fstype!r}", hint=f"use one of {', '.join(FsType)}"
        ) from None
    if len(label.encode()) > LABEL_MAX[kind]:
        raise FilesystemError(f"label {label!r} is longer than {kind} allows ({LABEL_MAX[kind]} bytes)")
    if root_dir is not None and kind not in (FsType.EXT4, FsType.BTRFS):
        raise FilesystemError(f"{kind} cannot be populated from a directory; mount it and copy instead")
    if kind is FsType.VFAT:
        _mkfs_vfat(image, part, uuid, label)
        return
    _check_uuid(uuid)
    if kind is FsType.EXT4:
        _mkfs_ext4(image, part, uuid, label, root_dir)
        return
    with loop_device(image, offset=part.start, size=part.size) as device:
        if kind is FsType.XFS:
            argv = ["mkfs.xfs", "-q", "-f", "-m", f"uuid={uuid}"]
            if label:
                argv += ["-L", label]
            run.run([*argv, device])
        elif kind is FsType.BTRFS:
            argv = ["mkfs.btrfs", "-q", "-f", "-U", uuid]
            if label:
                argv += ["-L", label]
            if root_dir is not None:
                argv += ["--rootdir", os.fspath(root_dir)]
            run.run([*argv, device])
        else:
            argv = ["mkswap", "-U", uuid]
            if label:
                argv += ["-L", label]
            run.run([*argv, device])


def _check_uuid(uuid: str) -> None:
    try:
        uuidlib.UUID(uuid)
    except ValueError:
        raise FilesystemError(f"not a UUID: {uuid!r}") from None


def _mkfs_ext4(image: Path, part: Placed, uuid: str, label: str, root_dir: Path | None) -> None:
    block = 4096
    argv: list[str | os.PathLike[str]] = [
        "mkfs.ext4",
        "-q",
        "-F",
        "-b",
        str(block),
        "-U",
        uuid,
        "-L",
        label,
        "-O",
        ",".join(EXT4_DISABLED_FEATURES),
        "-E",
        f"offset={part.start}",
    ]
    if root_dir is not None:
        argv += ["-d", root_dir]
    # With -E offset the size must be given, else mke2fs sizes the filesystem to the end of the file.
    argv += [image, str(part.size // block)]
    run.run(argv)


def _mkfs_vfat(image: Path, part: Placed, uuid: str, label: str) -> None:
    # Through a loop device of just the partition: mkfs.fat --offset on an image file larger than 4 GiB
    # writes a FAT that mtools cannot add a directory to ("No directory slots").
    argv = [
        "mkfs.fat",
        "-h",
        str(part.start // SECTOR),  # hidden sectors: firmware expects the partition's start LBA here
        "-i",
        fat_volume_id(uuid),
        "-S",
        str(SECTOR),
    ]
    if part.size >= FAT32_MIN_SIZE:
        argv += ["-F", "32"]
    if label:
        argv += ["-n", label]
    with loop_device(image, offset=part.start, size=part.size) as device:
        run.run([*argv, os.fspath(device)])
