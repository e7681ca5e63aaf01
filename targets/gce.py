"""gce: the archive Google Compute Engine imports, a `disk.raw` alone in a sparse, oldgnu-format tar.gz.

GCE's image import reads exactly one member named disk.raw, written by GNU tar in the oldgnu format with
sparse files (`tar --format=oldgnu -Sczf`), as Google documents and as osbuild's tar stage and
coreos-assembler write it. The check lists the archive with GNU tar and reads the member's header: oldgnu's
magic ("ustar  \\0") and the sparse type flag "S".
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder import run
from targets import qemu_img
from targets.base import GiB, Target
from targets.platforms import Platform

MEMBER = "disk.raw"
OLDGNU_MAGIC = b"ustar  \0"  # magic and version at offset 257 of an oldgnu header
SPARSE_TYPE = b"S"


class Gce(Target, name="gce"):
    help = "a tar.gz holding disk.raw, as Google Compute Engine imports"
    filename = "disk.tar.gz"
    format = "tar.gz"
    mime = "application/gzip"
    platform = Platform.GCP
    size_alignment = GiB  # GCE sizes disks in whole GiB: its import takes no other disk.raw size.

    def write(self, disk: Path, dest: Path, options: Mapping[str, Any], scratch: Path) -> None:
        # The member must be named disk.raw: a hard link gives the work disk that name without a copy.
        os.link(disk, scratch / MEMBER)
        try:
            run.run(["tar", "--format=oldgnu", "--sparse", "-czf", dest, "-C", scratch, MEMBER])
        finally:
            (scratch / MEMBER).unlink()

    def check(self, dest: Path, disk: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        listing = run.run(["tar", "-tvzf", dest]).out.splitlines()
        names = [line.split()[-1] for line in listing]
        if names != [MEMBER]:
            qemu_img.fail(dest, f"holds {names}, expected exactly [{MEMBER!r}]")
        size = int(listing[0].split()[2])
        if size != disk.stat().st_size:
            qemu_img.fail(dest, f"holds a {MEMBER} of {size} bytes, expected {disk.stat().st_size}")
        with gzip.open(dest, "rb") as f:
            header = f.read(512)
        if header[257:265] != OLDGNU_MAGIC:
            qemu_img.fail(dest, f"is not an oldgnu tar (magic {header[257:265]!r})")
        if header[156:157] != SPARSE_TYPE:
            qemu_img.fail(dest, f"holds {MEMBER} as type {header[156:157]!r}, not as a sparse file")
        return {"virtual_size": size, "contains": [MEMBER], "tar_format": "oldgnu"}
