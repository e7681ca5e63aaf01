"""Set the GPT fields libparted 3.5 cannot: the disk GUID and each partition's type GUID, unique GUID and
attribute bits, written into the table parted made (both copies) with the CRCs recomputed.

This used to be one `sgdisk` call, which sleeps a second after every write (and sync()s the whole machine)
to let the kernel re-read a block device's table: for an image file that second was most of the
`disk.partition` stage, in every build. The format is the UEFI specification's (chapter 5.3): a header at
LBA 1 and at the last LBA, each pointing to its copy of the entry array; GUIDs are stored mixed-endian
(`uuid.UUID.bytes_le`); the header's CRC32 covers its first `HeaderSize` bytes with the CRC field zeroed,
and a second CRC32 covers the entry array. `sgdisk --verify` checks the result (partition.verify_gpt).
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImgbuildError

SECTOR = 512
SIGNATURE = b"EFI PART"
# Header: signature, revision, header size, header CRC32, reserved, my LBA, alternate LBA, first usable,
# last usable, disk GUID, entries LBA, number of entries, entry size, entries CRC32.
_HEADER = struct.Struct("<8sIII4xQQQQ16sQIII")
_HEADER_CRC = 16  # byte offsets in the header
_DISK_GUID = slice(56, 72)
_ENTRIES_CRC = 88
_TYPE_GUID, _UNIQUE_GUID, _ATTRIBUTES = slice(0, 16), slice(16, 32), slice(48, 56)


class GptError(ImgbuildError):
    """The table parted wrote is not one this module can edit (it never should be)."""


@dataclass(frozen=True)
class EntryFields:
    type_guid: str
    unique_guid: str
    attributes: int = 0  # bit 2: legacy BIOS bootable


@dataclass(frozen=True)
class _Header:
    raw: bytes  # the whole sector
    size: int
    my_lba: int
    alternate_lba: int
    entries_lba: int
    entries: int
    entry_size: int
    entries_crc: int


def _read_header(fd: int, lba: int) -> _Header:
    raw = os.pread(fd, SECTOR, lba * SECTOR)
    if len(raw) < _HEADER.size:
        raise GptError(f"no GPT header at LBA {lba}: the image is too short")
    fields = _HEADER.unpack_from(raw)
    signature, _, size, crc, my_lba, alternate, _, _, _, entries_lba, entries, entry_size, array_crc = fields
    if signature != SIGNATURE or not _HEADER.size <= size <= SECTOR or entry_size < 128 or my_lba != lba:
        raise GptError(f"no valid GPT header at LBA {lba}")
    check = bytearray(raw[:size])
    struct.pack_into("<I", check, _HEADER_CRC, 0)
    if zlib.crc32(check) != crc:
        raise GptError(f"the GPT header at LBA {lba} fails its CRC")
    return _Header(raw, size, my_lba, alternate, entries_lba, entries, entry_size, array_crc)


def _write_copy(fd: int, header: _Header, entries: bytes, disk_guid: bytes) -> None:
    """Write `entries` where this header points, then the header with the new GUID and both CRCs."""
    os.pwrite(fd, entries, header.entries_lba * SECTOR)
    raw = bytearray(header.raw)
    raw[_DISK_GUID] = disk_guid
    struct.pack_into("<I", raw, _ENTRIES_CRC, zlib.crc32(entries))
    struct.pack_into("<I", raw, _HEADER_CRC, 0)
    struct.pack_into("<I", raw, _HEADER_CRC, zlib.crc32(raw[: header.size]))
    os.pwrite(fd, bytes(raw), header.my_lba * SECTOR)


def set_fields(image: Path, disk_guid: str, partitions: Mapping[int, EntryFields]) -> None:
    """Set the disk GUID and, for each partition number (1-based), its fields, in both copies."""
    with open(image, "r+b") as f:
        fd = f.fileno()
        primary = _read_header(fd, 1)
        backup = _read_header(fd, primary.alternate_lba)
        if (backup.entries, backup.entry_size) != (primary.entries, primary.entry_size):
            raise GptError(f"the two GPT headers of {image} describe different entry arrays")
        array = bytearray(os.pread(fd, primary.entries * primary.entry_size, primary.entries_lba * SECTOR))
        if len(array) != primary.entries * primary.entry_size or zlib.crc32(array) != primary.entries_crc:
            raise GptError(f"the GPT entry array of {image} fails its CRC")
        for number, fields in partitions.items():
            if not 1 <= number <= primary.entries:
                raise GptError(f"partition {number} is outside the GPT of {image}")
            at = (number - 1) * primary.entry_size
            entry = memoryview(array)[at : at + primary.entry_size]
            if not any(entry[_TYPE_GUID]):
                raise GptError(f"partition {number} is not in the GPT of {image}")
            entry[_TYPE_GUID] = uuid.UUID(fields.type_guid).bytes_le
            entry[_UNIQUE_GUID] = uuid.UUID(fields.unique_guid).bytes_le
            entry[_ATTRIBUTES] = struct.pack("<Q", fields.attributes)
        guid = uuid.UUID(disk_guid).bytes_le
        _write_copy(fd, primary, bytes(array), guid)
        _write_copy(fd, backup, bytes(array), guid)
