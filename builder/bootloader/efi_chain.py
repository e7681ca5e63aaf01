"""Which boot chain an image carries, and whether it can boot with Secure Boot enforced.

Secure Boot firmware runs only EFI binaries signed by a key in its `db` (Microsoft's UEFI CA on most
machines); shim, signed by that CA, then runs GRUB and the kernel signed by the distribution's key, and a
GRUB running under shim loads no module from disk. So an image boots with Secure Boot when it ships shim and
GRUB with Authenticode signatures, a signed kernel, and a GRUB whose built-in modules do everything the
grub.cfg stub needs. This module reads those facts from the files themselves (PE headers, GRUB's embedded
module list and prefix); it checks that signatures are present, not who made them: the firmware does that,
and the Secure Boot boot tests prove the chain against Microsoft's keys.
"""

from __future__ import annotations

import enum
import gzip
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.arch import Arch
from builder.errors import SecureBootUnavailable

EFI_SUFFIX = {Arch.X86_64: "x64", Arch.AARCH64: "aa64"}
# What the grub.cfg stub on the ESP and the grub.cfg on /boot use; a signed GRUB must have them built in.
STUB_MODULES = ("part_gpt", "search", "search_fs_uuid", "configfile", "linux", "normal")
# GRUB's module objects (include/grub/kernel.h): their type numbers.
_OBJ_ELF, _OBJ_MEMDISK, _OBJ_CONFIG, _OBJ_PREFIX = 0, 1, 2, 3
_MODULE_MAGIC = b"mimg"
_WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002


class BootChain(enum.StrEnum):
    SIGNED_SHIM_GRUB = "signed-shim-grub"  # shim and GRUB with signatures: boots with Secure Boot
    UNSIGNED_GRUB = "unsigned-grub"  # UEFI, but GRUB (or shim) is not signed: Secure Boot must be off
    BIOS_ONLY = "bios-only"  # no EFI boot loader at all
    NONE = "none"


class Tree(Protocol):
    """The read-only view of an image's files the checks need (a CommitTree, or a DirTree)."""

    def is_dir(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def read_bytes(self, path: str) -> bytes | None: ...


class DirTree:
    """A Tree over a directory (a deployment on a mounted root)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, path: str) -> Path | None:
        full = self.root / path
        try:
            full.resolve().relative_to(self.root.resolve())
        except ValueError:
            return None  # image content is untrusted: no symlink out of the root
        return full

    def is_dir(self, path: str) -> bool:
        full = self._path(path)
        return full is not None and full.is_dir()

    def listdir(self, path: str) -> list[str]:
        full = self._path(path)
        return sorted(p.name for p in full.iterdir()) if full is not None and full.is_dir() else []

    def read_bytes(self, path: str) -> bytes | None:
        full = self._path(path)
        return full.read_bytes() if full is not None and full.is_file() else None


def authenticode_signed(data: bytes) -> bool:
    """Whether `data` is a PE image with an Authenticode signature (a PKCS#7 WIN_CERTIFICATE in its
    certificate table). A gzip-compressed kernel (arm64 vmlinuz) is checked after decompression, as GRUB
    decompresses it before shim verifies it."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return False
    if len(data) < 0x40 or data[:2] != b"MZ":
        return False
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe : pe + 4] != b"PE\0\0" or len(data) < pe + 24 + 2:
        return False
    opt = pe + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    directories = {0x10B: opt + 96, 0x20B: opt + 112}.get(magic)
    if directories is None or len(data) < directories + 5 * 8:
        return False
    (count,) = struct.unpack_from("<I", data, directories - 4)
    if count < 5:
        return False
    offset, size = struct.unpack_from("<II", data, directories + 4 * 8)
    if size < 8 or offset + size > len(data):
        return False
    _length, _revision, cert_type = struct.unpack_from("<IHH", data, offset)
    return bool(cert_type == _WIN_CERT_TYPE_PKCS_SIGNED_DATA)


@dataclass(frozen=True)
class GrubImage:
    """What grub-mkimage built into a GRUB EFI binary."""

    prefix: str | None  # e.g. /EFI/debian: where it reads grub.cfg (on the device it was loaded from)
    modules: frozenset[str]
    config: str  # the embedded early config


def _objects(data: bytes, start: int) -> Iterator[tuple[int, bytes]] | None:
    if len(data) < start + 24:
        return None
    _pad, offset, size = struct.unpack_from("<IQQ", data, start + 4)
    end = start + size
    if offset != 24 or size < 24 or end > len(data):
        return None
    objects = []
    pos = start + offset
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<II", data, pos)
        if length < 8 or pos + length > end:
            return None
        objects.append((kind, data[pos + 8 : pos + length]))
        pos += length
    return iter(objects) if pos == end else None


def _modname(elf: bytes) -> str | None:
    """The `.modname` section of a GRUB module (a relocatable ELF object)."""
    if elf[:4] != b"\x7fELF":
        return None
    if elf[4] == 2:  # 64-bit
        (shoff,) = struct.unpack_from("<Q", elf, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
        fmt, name_at, off_at, size_at = "<IIQQQQ", 0, 4, 5
    else:
        (shoff,) = struct.unpack_from("<I", elf, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
        fmt, name_at, off_at, size_at = "<IIIIII", 0, 4, 5
    if shstrndx >= shnum or shoff + shnum * shentsize > len(elf):
        return None
    headers = [struct.unpack_from(fmt, elf, shoff + i * shentsize) for i in range(shnum)]
    names_off = headers[shstrndx][off_at]
    for header in headers:
        name = elf[names_off + header[name_at] :].split(b"\0", 1)[0]
        if name == b".modname":
            return elf[header[off_at] : header[off_at] + header[size_at]].split(b"\0", 1)[0].decode()
    return None


def grub_image(data: bytes) -> GrubImage | None:
    """The prefix, modules and early config built into a GRUB EFI binary; None when `data` is not one."""
    at = data.find(_MODULE_MAGIC)
    while at != -1:
        objects = _objects(data, at)
        if objects is not None:
            prefix, modules, config = None, set(), ""
            for kind, body in objects:
                if kind == _OBJ_PREFIX:
                    prefix = body.split(b"\0", 1)[0].decode(errors="replace")
                elif kind == _OBJ_CONFIG:
                    config = body.split(b"\0", 1)[0].decode(errors="replace")
                elif kind == _OBJ_ELF:
                    name = _modname(body)
                    if name:
                        modules.add(name)
            return GrubImage(prefix, frozenset(modules), config)
        at = data.find(_MODULE_MAGIC, at + 1)
    return None


def esp_config_dir(prefix: str | None) -> str | None:
    """The ESP directory a GRUB with `prefix` reads grub.cfg from (`EFI/debian`), or None when its prefix
    names another device (`(hd0,gpt2)/grub2`) or nothing."""
    if not prefix or not prefix.startswith("/"):
        return None
    return prefix.strip("/")


def _find_ci(names: list[str], wanted: str) -> str | None:
    return next((n for n in names if n.lower() == wanted.lower()), None)


@dataclass(frozen=True)
class ChainInfo:
    chain: BootChain
    vendor: str | None  # the payload's vendor directory (EFI/<vendor>) holding GRUB
    grub_prefix: str | None
    secure_boot_problems: tuple[str, ...]  # empty: boots with Secure Boot enforced

    @property
    def secure_boot(self) -> bool:
        return not self.secure_boot_problems


def examine(
    tree: Tree,
    arch: Arch,
    *,
    payload: str | None,
    kernel: str | None,
    grub_platforms: tuple[str, ...],
    boot_fs_module: str = "ext2",
) -> ChainInfo:
    """The boot chain of the image whose files `tree` shows (payload: its EFI payload directory)."""
    sfx = EFI_SUFFIX[arch]
    efi_platform = "x86_64-efi" if arch is Arch.X86_64 else "arm64-efi"
    problems: list[str] = []
    kernel_data = tree.read_bytes(f"usr/lib/modules/{kernel}/vmlinuz") if kernel else None
    if kernel_data is None:
        problems.append("the image has no kernel at usr/lib/modules/<version>/vmlinuz")
    elif not authenticode_signed(kernel_data):
        problems.append(f"the kernel {kernel} is not signed")
    if payload is not None and tree.is_dir(payload):
        vendor = grub_path = shim_path = None
        for name in tree.listdir(payload):
            if name.upper() == "BOOT" or not tree.is_dir(f"{payload}/{name}"):
                continue
            names = tree.listdir(f"{payload}/{name}")
            grub = _find_ci(names, f"grub{sfx}.efi")
            if grub is not None:
                vendor, grub_path = name, f"{payload}/{name}/{grub}"
                shim = _find_ci(names, f"shim{sfx}.efi")
                shim_path = f"{payload}/{name}/{shim}" if shim else None
                break
        if vendor is None or grub_path is None:
            problems.insert(0, f"the image's EFI payload {payload} has no grub{sfx}.efi")
            return ChainInfo(BootChain.UNSIGNED_GRUB, None, None, tuple(problems))
        grub_data = tree.read_bytes(grub_path) or b""
        shim_data = tree.read_bytes(shim_path) if shim_path else None
        signed = authenticode_signed(grub_data) and shim_data is not None and authenticode_signed(shim_data)
        if shim_data is None:
            problems.insert(0, f"the image ships no shim{sfx}.efi beside {grub_path}")
        elif not authenticode_signed(shim_data):
            problems.insert(0, f"{shim_path} is not signed")
        if not authenticode_signed(grub_data):
            problems.insert(0, f"{grub_path} is not signed")
        info = grub_image(grub_data)
        prefix = info.prefix if info else None
        if info is None:
            problems.append(f"{grub_path} is not a GRUB image")
        else:
            if esp_config_dir(prefix) is None:
                problems.append(
                    f"{grub_path} reads its grub.cfg from {prefix!r}, not from a directory of the ESP"
                )
            missing = [m for m in (*STUB_MODULES, boot_fs_module) if m not in info.modules]
            if missing:
                problems.append(f"{grub_path} lacks the built-in modules {', '.join(missing)}")
        chain = BootChain.SIGNED_SHIM_GRUB if signed else BootChain.UNSIGNED_GRUB
        return ChainInfo(chain, vendor, prefix, tuple(problems))
    if efi_platform in grub_platforms:
        problems.insert(
            0, "the image ships no signed shim and GRUB: imgbuild builds an unsigned GRUB from its modules"
        )
        return ChainInfo(BootChain.UNSIGNED_GRUB, None, None, tuple(problems))
    chain = BootChain.BIOS_ONLY if "i386-pc" in grub_platforms else BootChain.NONE
    problems.insert(0, "the image has no EFI boot loader")
    return ChainInfo(chain, None, None, tuple(problems))


def require_secure_boot(reference: str, problems: Sequence[str]) -> None:
    """SecureBootUnavailable (one line, exit 2) when `problems` says the image cannot boot with Secure
    Boot enforced."""
    if not problems:
        return
    more = ""
    if len(problems) > 1:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})"
    raise SecureBootUnavailable(
        f"{reference} cannot boot with Secure Boot: {problems[0]}{more}",
        hint="use an image that ships shim and GRUB signed for Secure Boot (Debian: shim-signed, "
        "grub-efi-amd64-signed) and a signed kernel, or leave out --secure-boot require",
    )
