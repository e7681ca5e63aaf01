"""The non-zero 512 KiB blocks of a raw disk, found without reading its holes.

The sparse map comes from lseek(SEEK_DATA/SEEK_HOLE): only the extents that hold data are read, one block at
a time (memory stays at one block per request in flight), and blocks that read as all zeros are skipped too.
EBS snapshots start out as zeros, so a skipped block is exactly what the volume would have read.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

BLOCK_SIZE = 512 * 1024  # the EBS direct APIs' only block size
ZERO_BLOCK = bytes(BLOCK_SIZE)


@dataclass(frozen=True)
class Block:
    index: int
    data: bytes  # exactly BLOCK_SIZE bytes (the last block of the disk is padded with zeros)


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) byte ranges that may hold data; the whole file when the filesystem has no sparse map."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after offset: the rest is a hole
                return
            if e.errno == errno.EINVAL:  # SEEK_DATA unsupported here: treat the file as all data
                yield offset, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def block_indexes(extents: Iterable[tuple[int, int]]) -> Iterator[int]:
    """The indexes of the blocks the extents touch, each once, in order."""
    last = -1
    for start, end in extents:
        for index in range(max(start // BLOCK_SIZE, last + 1), -(-end // BLOCK_SIZE)):
            last = index
            yield index


def read_blocks(fd: int, size: int) -> Iterator[Block]:
    """The blocks of the disk that hold anything but zeros."""
    for index in block_indexes(data_extents(fd, size)):
        data = os.pread(fd, BLOCK_SIZE, index * BLOCK_SIZE)
        if len(data) < BLOCK_SIZE:
            data += bytes(BLOCK_SIZE - len(data))
        if data != ZERO_BLOCK:
            yield Block(index, data)


def scanned_bytes(size: int, index: int) -> int:
    """How much of the disk lies before the end of block `index` (for progress)."""
    return min(size, (index + 1) * BLOCK_SIZE)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def linear_checksum(checksums: dict[int, str]) -> str:
    """AWS's LINEAR aggregation: SHA256 over the blocks' SHA256 digests concatenated in block order."""
    digest = hashlib.sha256()
    for index in sorted(checksums):
        digest.update(base64.b64decode(checksums[index]))
    return base64.b64encode(digest.digest()).decode()
