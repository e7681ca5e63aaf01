"""The block reader of the EBS upload: sparse map, zero blocks, padding, the LINEAR checksum."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from builder.upload.blocks import (
    BLOCK_SIZE,
    block_indexes,
    data_extents,
    linear_checksum,
    read_blocks,
    sha256_b64,
)

TiB = 1 << 40


def _write(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def test_holes_are_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 TiB sparse file with data in three places: only the blocks holding data are read."""
    disk = tmp_path / "sparse.raw"
    with disk.open("wb") as f:
        f.truncate(TiB)
    _write(disk, 4096, b"a" * 100)  # block 0
    _write(disk, 5 * BLOCK_SIZE - 10, b"b" * 20)  # straddles blocks 4 and 5
    _write(disk, TiB - 1, b"z")  # the last block
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(offset // BLOCK_SIZE)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    fd = os.open(disk, os.O_RDONLY)
    try:
        found = [b.index for b in read_blocks(fd, TiB)]
    finally:
        os.close(fd)
    last = TiB // BLOCK_SIZE - 1
    assert found == [0, 4, 5, last]
    # Filesystems map data in their own block size (4 KiB here), so a read is one 512 KiB block each.
    assert reads == found


def test_zero_blocks_written_out_are_skipped_and_the_tail_is_padded(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    size = 3 * BLOCK_SIZE + 1000  # not a whole number of blocks
    disk.write_bytes(bytes(size))  # all data, no holes: every block is read, and all are zero
    _write(disk, 3 * BLOCK_SIZE + 999, b"\x01")
    fd = os.open(disk, os.O_RDONLY)
    try:
        extents = list(data_extents(fd, size))
        found = list(read_blocks(fd, size))
    finally:
        os.close(fd)
    assert extents == [(0, size)]
    assert [b.index for b in found] == [3]
    assert len(found[0].data) == BLOCK_SIZE
    assert found[0].data[999] == 1 and found[0].data[1000:] == bytes(BLOCK_SIZE - 1000)


def test_block_indexes_touch_each_block_once() -> None:
    extents = [
        (0, 10),
        (100, BLOCK_SIZE + 1),
        (BLOCK_SIZE + 5, BLOCK_SIZE + 6),
        (10 * BLOCK_SIZE, 10 * BLOCK_SIZE + 1),
    ]
    assert list(block_indexes(extents)) == [0, 1, 10]


def test_linear_checksum_is_sha256_of_the_block_digests_in_index_order() -> None:
    data = {7: b"seven" * 1000, 2: b"two" * 1000, 30: b"thirty"}
    checksums = {index: sha256_b64(block) for index, block in data.items()}  # inserted out of order
    concatenated = b"".join(hashlib.sha256(data[i]).digest() for i in (2, 7, 30))
    assert linear_checksum(checksums) == base64.b64encode(hashlib.sha256(concatenated).digest()).decode()
    assert sha256_b64(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
