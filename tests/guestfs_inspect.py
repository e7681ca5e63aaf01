"""Looking into a built disk image with libguestfs, without booting it (and without root)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import guestfs

from builder.vm import kvm_usable


@contextmanager
def guest(image: Path) -> Iterator[Any]:
    """A read-only libguestfs handle with every filesystem of the image listed (not mounted)."""
    os.environ["LIBGUESTFS_BACKEND"] = "direct"
    if not kvm_usable():
        os.environ["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    g = guestfs.GuestFS(python_return_dict=True)
    g.add_drive_opts(str(image), readonly=1)
    g.launch()
    try:
        yield g
    finally:
        g.shutdown()
        g.close()


def mount_sysroot(g: Any) -> None:
    """Mount the root filesystem (label root) at / and the boot filesystem (label boot) at /boot."""
    labels = g.list_filesystems()
    by_label = {g.vfs_label(dev): dev for dev, kind in labels.items() if kind not in ("unknown", "swap")}
    g.mount_ro(by_label["root"], "/")
    g.mount_ro(by_label["boot"], "/boot")
