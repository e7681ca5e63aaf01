"""Reading an initramfs's file names (builder/iso/initramfs.py) and what a live boot needs from it.

The archives are made here with cpio's newc format as dracut writes it (`cpio -o -H newc`, the host's GNU cpio
when present, else written in Python), compressed as dracut does (gzip, xz), and concatenated as an early
(uncompressed) archive followed by the main one."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from builder import run
from builder.iso import initramfs

LIVE = [
    "usr/sbin/dmsquash-live-root",
    "usr/lib/systemd/system-generators/dracut-dmsquash-generator",
    "usr/lib/modules/6.1.0-1-amd64/kernel/fs/squashfs/squashfs.ko",
    "usr/lib/modules/6.1.0-1-amd64/kernel/fs/isofs/isofs.ko.xz",
    "usr/lib/modules/6.1.0-1-amd64/kernel/drivers/md/dm-snapshot.ko",
]


def newc(tmp_path: Path, names: list[str], tag: str = "main") -> bytes:
    """A newc cpio archive of files at `names` (made by GNU cpio from a real tree)."""
    tree = tmp_path / f"tree-{tag}"
    for name in names:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(name.encode() * 3)
    listing = "\n".join(["."] + [f"./{n}" for n in names]) + "\n"
    return run.run(["cpio", "-o", "-H", "newc", "--quiet"], input=listing.encode(), cwd=tree).stdout


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, lzma.compress])
def test_names_of_a_compressed_archive(tmp_path: Path, compress: object) -> None:
    data = compress(newc(tmp_path, LIVE))  # type: ignore[operator]
    names = initramfs.list_names(data)
    assert set(LIVE) <= set(names)
    assert initramfs.live_boot_problem(names) is None


def test_early_archive_then_compressed_main(tmp_path: Path) -> None:
    early = newc(tmp_path, ["kernel/x86/microcode/GenuineIntel.bin"], "early")
    data = early + b"\0" * 512 + gzip.compress(newc(tmp_path, LIVE))
    names = initramfs.list_names(data)
    assert "kernel/x86/microcode/GenuineIntel.bin" in names
    assert set(LIVE) <= set(names)


def test_missing_dmsquash_live_is_named(tmp_path: Path) -> None:
    names = initramfs.list_names(gzip.compress(newc(tmp_path, LIVE[2:])))
    problem = initramfs.live_boot_problem(names)
    assert problem is not None and "no dracut dmsquash-live module" in problem
    assert "dmsquash-live" in initramfs.LIVE_HINT and "dracut-live" in initramfs.LIVE_HINT


def test_missing_drivers_are_named_unless_built_in(tmp_path: Path) -> None:
    names = initramfs.list_names(newc(tmp_path, LIVE[:2]))
    problem = initramfs.live_boot_problem(names)
    assert problem == (
        "its initramfs lacks the kernel drivers squashfs isofs dm-snapshot (add them to dracut's drivers=)"
    )
    builtin = "kernel/fs/squashfs/squashfs.ko\nkernel/fs/isofs/isofs.ko\nkernel/drivers/md/dm-snapshot.ko\n"
    assert initramfs.live_boot_problem(names, builtin) is None


def test_garbage_is_unreadable() -> None:
    with pytest.raises(initramfs.InitramfsUnreadable):
        initramfs.list_names(b"\x7fELF" + b"\0" * 100)
    with pytest.raises(initramfs.InitramfsUnreadable):
        initramfs.list_names(b"070701" + b"zz" * 60)
