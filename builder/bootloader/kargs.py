"""Kernel arguments for one boot: appended to the BLS entries and grub.cfg inside a throwaway qcow2 overlay.

Editing the files GRUB reads works with any GRUB: Debian's (menuentry `linux` lines in grub.cfg) and
Fedora's (blscfg reads the BLS `options` lines). Two ways in:
- as root, fast (about a second): qemu-storage-daemon exports the overlay as a raw file over FUSE, each
  partition gets a loop device, Linux filesystems are mounted and edited;
- otherwise, or when that fails, libguestfs (one appliance boot, ~18 s under TCG), which needs no root.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from builder import run
from builder.devices import loop_device, mounted
from builder.errors import ImgbuildError

log = logging.getLogger(__name__)

# Where /boot's files are, relative to the filesystem that holds them: /boot as its own partition, or
# /boot inside the root filesystem.
BOOT_PREFIXES = ("", "boot/")
GRUB_CFGS = ("grub2/grub.cfg", "grub/grub.cfg")
LINUX_FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs")
_LINUX_LINE = re.compile(r"^(\s*(?:linux|linuxefi|linux16)\s+\S+)(.*)$")
EXPORT_WAIT_SECONDS = 10.0


class KernelArgsError(ImgbuildError):
    """Kernel arguments could not be added to the image's boot files."""


def append_to_bls(text: str, args: str) -> str:
    """A BLS entry with `args` appended to its options line (one is added when it has none)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.split(" ", 1)[0] == "options":
            lines[i] = f"{line.rstrip()} {args}"
            break
    else:
        lines.append(f"options {args}")
    return "\n".join(lines) + "\n"


def append_to_grub_cfg(text: str, args: str) -> str:
    """grub.cfg with `args` appended to every `linux` line (a blscfg-only grub.cfg has none)."""
    out = []
    for line in text.splitlines():
        m = _LINUX_LINE.match(line)
        out.append(f"{m.group(1)}{m.group(2).rstrip()} {args}" if m else line)
    return "\n".join(out) + "\n"


class BootFiles(Protocol):
    """The few file operations the edit needs, on a filesystem mounted somewhere (absolute paths)."""

    def is_dir(self, path: str) -> bool: ...
    def is_file(self, path: str) -> bool: ...
    def ls(self, path: str) -> list[str]: ...
    def realpath(self, path: str) -> str | None: ...
    def read(self, path: str) -> str: ...
    def write(self, path: str, text: str) -> None: ...


def edit_boot_files(fs: BootFiles, args: str) -> int:
    """Append `args` to every BLS entry and grub.cfg `linux` line; returns how many files it found.

    ostree's /boot has a `boot -> .` link, so /boot/x and /boot/boot/x are one file: each file is edited
    once, by its real path.
    """
    seen: set[str] = set()

    def first_time(path: str) -> bool:
        real = fs.realpath(path)
        if real is None or real in seen:
            return False
        seen.add(real)
        return True

    for prefix in BOOT_PREFIXES:
        entries = f"/{prefix}loader/entries"
        if fs.is_dir(entries):
            for name in sorted(fs.ls(entries)):
                path = f"{entries}/{name}"
                if name.endswith(".conf") and fs.is_file(path) and first_time(path):
                    fs.write(path, append_to_bls(fs.read(path), args))
        for cfg in GRUB_CFGS:
            path = f"/{prefix}{cfg}"
            if fs.is_file(path) and first_time(path):
                text = fs.read(path)
                new = append_to_grub_cfg(text, args)
                if new != text:
                    fs.write(path, new)
    return len(seen)


class LocalFiles:
    """A filesystem mounted on the host at `root`. Its content is untrusted: no path may leave `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, path: str) -> Path | None:
        resolved = (self.root / path.lstrip("/")).resolve()
        return resolved if resolved == self.root or self.root in resolved.parents else None

    def is_dir(self, path: str) -> bool:
        p = self._path(path)
        return p is not None and p.is_dir()

    def is_file(self, path: str) -> bool:
        p = self._path(path)
        return p is not None and p.is_file()

    def ls(self, path: str) -> list[str]:
        p = self._path(path)
        return sorted(e.name for e in p.iterdir()) if p is not None else []

    def realpath(self, path: str) -> str | None:
        p = self._path(path)
        return str(p) if p is not None else None

    def read(self, path: str) -> str:
        p = self._path(path)
        assert p is not None
        return p.read_text(errors="surrogateescape")

    def write(self, path: str, text: str) -> None:
        p = self._path(path)
        assert p is not None
        partial = p.with_name(f".{p.name}.imgbuild")
        partial.write_text(text, errors="surrogateescape")
        partial.replace(p)


class GuestfsFiles:
    """A filesystem mounted at / inside a libguestfs appliance."""

    def __init__(self, g: Any) -> None:
        self.g = g

    def is_dir(self, path: str) -> bool:
        return bool(self.g.is_dir(path, followsymlinks=True))

    def is_file(self, path: str) -> bool:
        return bool(self.g.is_file(path, followsymlinks=True))

    def ls(self, path: str) -> list[str]:
        return list(self.g.ls(path))

    def realpath(self, path: str) -> str | None:
        return str(self.g.realpath(path))

    def read(self, path: str) -> str:
        return bytes(self.g.read_file(path)).decode(errors="surrogateescape")

    def write(self, path: str, text: str) -> None:
        self.g.write(path, text.encode(errors="surrogateescape"))


def append_kernel_args(overlay: Path, args: str, *, tcg: bool) -> None:
    """Append `args` to the kernel command lines stored in the qcow2 `overlay` (BLS entries, grub.cfg)."""
    if "\n" in args or not args.strip():
        raise KernelArgsError(f"bad kernel arguments {args!r}")
    if _fuse_usable():
        try:
            edited = _append_through_fuse(overlay, args)
        except ImgbuildError as e:
            # Nothing was edited yet when the export or a mount failed; a failure half-way through would
            # leave edits behind, so start again from an untouched overlay.
            log.warning("editing the overlay through FUSE failed (%s); using libguestfs", e)
            backing = json.loads(run.run(["qemu-img", "info", "--output=json", overlay]).out)
            run.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing["backing-filename"],
                     "-F", backing["backing-filename-format"], overlay])  # fmt: skip
            edited = _append_through_guestfs(overlay, args, tcg=tcg)
    else:
        edited = _append_through_guestfs(overlay, args, tcg=tcg)
    if not edited:
        raise KernelArgsError(
            "found no BLS entries or grub.cfg in the image to add kernel arguments to",
            hint="boot without --append, or check that the image has a /boot with GRUB",
        )
    log.debug("appended %r to %d boot files", args, edited)


def _fuse_usable() -> bool:
    return run.is_root() and Path("/dev/fuse").exists() and run.which("qemu-storage-daemon") is not None


@contextmanager
def _raw_export(overlay: Path) -> Iterator[Path]:
    """The qcow2 `overlay` seen as a writable raw file, exported over FUSE by qemu-storage-daemon."""
    with tempfile.TemporaryDirectory(prefix="imgbuild-export-") as tmp:
        raw = Path(tmp) / "disk.raw"
        raw.touch()
        argv = [
            "qemu-storage-daemon",
            "--blockdev",
            f"driver=qcow2,node-name=disk,file.driver=file,file.filename={overlay}",
            "--export",
            f"type=fuse,id=export,node-name=disk,mountpoint={raw},writable=on",
        ]
        with run.spawn(argv, stdout=run.DEVNULL, stderr=run.DEVNULL, check=False) as daemon:
            try:
                deadline = time.monotonic() + EXPORT_WAIT_SECONDS
                while not os.path.ismount(raw):
                    if daemon.poll() is not None or time.monotonic() > deadline:
                        raise KernelArgsError(f"qemu-storage-daemon could not export {overlay} over FUSE")
                    time.sleep(0.05)
                yield raw
            finally:
                run.terminate(daemon)  # it flushes the overlay and removes the FUSE mount on SIGTERM


def _append_through_fuse(overlay: Path, args: str) -> int:
    edited = 0
    with _raw_export(overlay) as raw, tempfile.TemporaryDirectory(prefix="imgbuild-mnt-") as mnt:
        table = json.loads(run.run(["sfdisk", "--json", raw]).out)["partitiontable"]
        sector = int(table.get("sectorsize", 512))
        for part in table.get("partitions", []):
            start, size = int(part["start"]) * sector, int(part["size"]) * sector
            with loop_device(raw, offset=start, size=size) as dev:
                probe = run.run(["blkid", "-p", "-o", "value", "-s", "TYPE", dev], check=False)
                fstype = probe.out.strip()
                if fstype not in LINUX_FILESYSTEMS:
                    continue
                # nouuid: the same image's xfs may be mounted elsewhere on this host (a build in progress).
                options = ["nouuid"] if fstype == "xfs" else []
                with mounted(dev, Path(mnt), fstype=fstype, options=options):
                    edited += edit_boot_files(LocalFiles(Path(mnt)), args)
    return edited


def _append_through_guestfs(overlay: Path, args: str, *, tcg: bool) -> int:
    try:
        import guestfs
    except ImportError as e:
        raise KernelArgsError(
            f"libguestfs is not available to Python ({e})",
            hint="install python3-guestfs and use the venv made with --system-site-packages",
        ) from None
    g = guestfs.GuestFS(python_return_dict=True)
    edited = 0
    try:
        g.set_backend("direct")  # libvirt is not running on build hosts
        if tcg:
            g.set_backend_settings(["force_tcg"])  # else the appliance hangs trying a KVM that fails
        g.add_drive_opts(str(overlay), format="qcow2", readonly=False)
        g.launch()
        for device, fstype in sorted(g.list_filesystems().items()):
            if fstype not in LINUX_FILESYSTEMS:
                continue
            g.mount(device, "/")
            try:
                edited += edit_boot_files(GuestfsFiles(g), args)
            finally:
                g.umount_all()
        g.shutdown()
    except RuntimeError as e:
        raise KernelArgsError(
            f"libguestfs could not edit the image: {str(e).splitlines()[0]}",
            hint="libguestfs needs a kernel on the host (Debian package linux-image-amd64); "
            "`libguestfs-test-tool` shows why it fails",
        ) from None
    finally:
        g.close()
    return edited
