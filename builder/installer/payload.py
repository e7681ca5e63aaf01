"""The installer's payload: the raw disk as the chunks that hold data, compressed, with an index.

A raw disk is mostly zeros (the root filesystem's free space). The installer zeroes the image's range with one
BLKZEROOUT and writes only the 1 MiB blocks that hold data, so the payload is `index` (one `START COUNT`
line per run of such blocks, in MiB) and `disk.zst` (the runs, concatenated, zstd-compressed). The sha256 of
the runs is what the installer checks after reading them back from the disk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

BLOCK = 1 << 20  # the installer's dd block size
ZSTD_LEVEL = 3  # fast to decompress under emulation (TCG), where the install spends its time
_ZERO = bytes(BLOCK)


@dataclass(frozen=True)
class Payload:
    image_size: int  # bytes
    sha256: str  # of the data runs, concatenated
    runs: tuple[tuple[int, int], ...]  # (start, count) in blocks
    data_bytes: int  # bytes in the runs (what the installer writes)
    compressed_bytes: int


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the file's data, from SEEK_DATA/SEEK_HOLE, widened to whole blocks."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # no data after offset (ENXIO)
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start // BLOCK * BLOCK, min(-(-end // BLOCK) * BLOCK, size)
        offset = end


def _data_blocks(disk: Path) -> Iterator[tuple[int, bytes]]:
    """(block number, bytes) of every block that is not all zeros, in order."""
    size = disk.stat().st_size
    last = -1
    with open(disk, "rb") as f:
        for start, end in _data_extents(f.fileno(), size):
            for block in range(max(start // BLOCK, last + 1), -(-end // BLOCK)):
                f.seek(block * BLOCK)
                data = f.read(BLOCK)
                last = block
                if data.count(0) != len(data):
                    yield block, data.ljust(BLOCK, b"\0")


def write_payload(disk: Path, dest: Path) -> Payload:
    """Write `dest`/index and `dest`/disk.zst from the raw `disk`."""
    size = disk.stat().st_size
    if size % BLOCK:
        raise ValueError(f"{disk}: {size} bytes is not a whole number of MiB")
    runs: list[list[int]] = []
    digest = hashlib.sha256()
    data_bytes = 0
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with open(dest / "disk.zst", "wb") as out, compressor.stream_writer(out, closefd=False) as z:
        for block, data in _data_blocks(disk):
            if runs and runs[-1][0] + runs[-1][1] == block:
                runs[-1][1] += 1
            else:
                runs.append([block, 1])
            z.write(data)
            digest.update(data)
            data_bytes += len(data)
    (dest / "index").write_text("".join(f"{start} {count}\n" for start, count in runs))
    return Payload(
        image_size=size,
        sha256=digest.hexdigest(),
        runs=tuple((s, c) for s, c in runs),
        data_bytes=data_bytes,
        compressed_bytes=(dest / "disk.zst").stat().st_size,
    )
