"""Reading an image's initramfs without running anything of the image: which files it holds.

An initramfs is one or more cpio archives ("newc", magic 070701/070702), each possibly compressed, one after
the other (an uncompressed early-microcode archive, then the main one). gzip, xz and lzma are read with
Python's own modules; zstd, lz4 and bzip2 with the host's tools through builder/run.py.

`live_boot_problem(names)` says what a live ISO needs from it: dracut's dmsquash-live module (its root
script and its systemd generator) and the kernel's squashfs, ISO 9660 and device-mapper snapshot drivers
(as modules in the initramfs or built into the kernel, modules.builtin).
"""

from __future__ import annotations

import bz2
import lzma
import zlib

from builder import run

NEWC = (b"070701", b"070702")
HEADER = 110
TRAILER = "TRAILER!!!"
_TOOLS = {b"\x28\xb5\x2f\xfd": "zstd", b"\x02\x21\x4c\x18": "lz4"}
# What a live boot needs, and how to get it into a Debian or Fedora image.
LIVE_SCRIPTS = ("usr/sbin/dmsquash-live-root", "usr/lib/systemd/system-generators/dracut-dmsquash-generator")
LIVE_DRIVERS = {"squashfs": "fs/squashfs/", "isofs": "fs/isofs/", "dm-snapshot": "drivers/md/dm-snapshot"}
LIVE_HINT = (
    "add dracut's dmsquash-live module to the image's initramfs (Debian: package dracut-live and "
    'add_dracutmodules+=" dmsquash-live " in dracut.conf.d; Fedora: dracut-live)'
)


class InitramfsUnreadable(ValueError):
    """The data is not an initramfs this reader understands."""


def _cpio_names(data: bytes, offset: int) -> tuple[list[str], int]:
    """The names in the newc archive at `offset`, and where it ends."""
    names: list[str] = []
    pos = offset
    while True:
        header = data[pos : pos + HEADER]
        if len(header) < HEADER or header[:6] not in NEWC:
            raise InitramfsUnreadable(f"no cpio header at byte {pos}")
        try:
            filesize = int(header[54:62], 16)
            namesize = int(header[94:102], 16)
        except ValueError as e:
            raise InitramfsUnreadable(f"bad cpio header at byte {pos}") from e
        name_start = pos + HEADER
        name = data[name_start : name_start + namesize - 1].decode("utf-8", "replace")
        pos = name_start + namesize
        pos += -pos % 4
        pos += filesize
        pos += -pos % 4
        if name == TRAILER:
            return names, pos
        names.append(name.removeprefix("./").lstrip("/"))


def _decompress(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return zlib.decompressobj(wbits=47).decompress(data)
    if data[:6] == b"\xfd7zXZ\x00" or data[:3] == b"\x5d\x00\x00":
        return lzma.LZMADecompressor().decompress(data)
    if data[:3] == b"BZh":
        return bz2.BZ2Decompressor().decompress(data)
    tool = _TOOLS.get(data[:4])
    if tool is not None:
        return run.run([tool, "-d", "-c"], input=data, hint=f"install the host package {tool}").stdout
    raise InitramfsUnreadable(f"unknown compression (magic {data[:4].hex()})")


def list_names(data: bytes) -> list[str]:
    """Every path in the initramfs `data`, as it will be in the initramfs root (no leading ./ or /)."""
    names: list[str] = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 6] in NEWC:
            found, pos = _cpio_names(data, pos)
            names += found
            continue
        if data[pos] == 0:  # padding between archives
            pos += 1
            continue
        # A compressed archive runs to the end of the file.
        inner = _decompress(data[pos:])
        names += list_names(inner)
        break
    return names


def live_boot_problem(names: list[str], modules_builtin: str = "") -> str | None:
    """What the initramfs lacks for a live boot from a squashfs on an ISO, or None when it has it all.

    `modules_builtin` is the kernel's modules.builtin (what is compiled in rather than a module).
    """
    have = set(names)
    missing = [s for s in LIVE_SCRIPTS if s not in have]
    if missing:
        return f"its initramfs has no dracut dmsquash-live module (no {', '.join(missing)})"
    lacking = []
    for fs, path in LIVE_DRIVERS.items():
        in_initramfs = any(f"/kernel/{path}" in n and ".ko" in n for n in names)
        if not in_initramfs and f"kernel/{path}" not in modules_builtin:
            lacking.append(fs)
    if lacking:
        names_ = " ".join(lacking)
        return f"its initramfs lacks the kernel drivers {names_} (add them to dracut's drivers=)"
    return None
