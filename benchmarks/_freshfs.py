"""A fresh ext4 filesystem (an image file on a direct-I/O loop device) for one benchmark's writes.

Why: this machine's root filesystem is ext4 without a journal, and there ext4 checks every free inode it
considers for a new file against the time it was freed: after a tree of tens of thousands of files was
deleted (the previous run's, or any other process's), each new inode scans past the recently freed ones,
and whichever step runs next pays for it (perf: up to 50% of an import's CPU in `recently_deleted` and
`find_get_block_common`, a 2x spread between runs of the same step). A fresh filesystem with mkfs.ext4's
defaults (journaled, as a user's disk) gives every step, the import and its baselines alike, the same
starting state. Reads (the cache's blobs, the baselines' tars) stay where they are.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from builder import run


@contextlib.contextmanager
def fresh_filesystem(size: int, under: Path) -> Iterator[Path]:
    """Mount a new ext4 of `size` bytes (sparse image in a temporary directory under `under`); yield its
    mount point; unmount and delete everything afterwards."""
    under.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fs-", dir=under))
    image, mountpoint = tmp / "fs.img", tmp / "mnt"
    try:
        with open(image, "wb") as f:
            f.truncate(size)
        run.run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", image])
        mountpoint.mkdir()
        # Direct I/O: the loop device writes to the host's disk without a second page cache (the image
        # file's), as a filesystem on a disk of its own would; else writeback of the image file competes
        # with the step being timed, at random.
        loop = run.run(["losetup", "--find", "--show", "--direct-io=on", image]).out.strip()
        try:
            run.run(["mount", loop, mountpoint])
            try:
                yield mountpoint
            finally:
                run.run(["umount", mountpoint])
        finally:
            run.run(["losetup", "--detach", loop])
    finally:
        shutil.rmtree(tmp)
