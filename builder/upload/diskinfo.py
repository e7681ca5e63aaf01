"""What an upload needs to know about a disk: its raw file, size, architecture and boot modes.

Read from the disk itself: the GPT (sfdisk), the BIOS boot partition, the removable-media loaders in the ESP
(mtools on the partition's offset, no mount), the root partition's type GUID; the result.json written beside
the disk by `imgbuild build` names the architecture when present. A qcow2 or vmdk is converted to a sparse
raw file in a temporary directory first (qemu-img), since the upload reads raw blocks.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import run
from builder.arch import Arch
from builder.disk.esp import MTOOLS_ENV
from builder.disk.partition import BIOS_BOOT, ESP, ROOT_AARCH64, ROOT_X86_64
from builder.errors import UploadError

SECTOR = 512
LOADERS = {"BOOTX64.EFI": Arch.X86_64, "BOOTAA64.EFI": Arch.AARCH64}
ROOT_TYPES = {ROOT_X86_64: Arch.X86_64, ROOT_AARCH64: Arch.AARCH64}
CONVERTIBLE = ("qcow2", "vmdk", "vpc", "vhdx")


class BootMode(enum.StrEnum):
    """EC2's BootMode values."""

    LEGACY_BIOS = "legacy-bios"
    UEFI = "uefi"
    UEFI_PREFERRED = "uefi-preferred"


@dataclass(frozen=True)
class DiskInfo:
    path: Path  # a raw disk
    size: int  # bytes
    arch: Arch
    bios: bool  # a BIOS boot partition (GRUB's core.img)
    uefi: bool  # a removable-media loader in the ESP

    @property
    def boot_mode(self) -> BootMode:
        if self.arch is Arch.AARCH64:
            return BootMode.UEFI  # EC2's Graviton instances boot UEFI only
        if self.bios and self.uefi:
            return BootMode.UEFI_PREFERRED
        return BootMode.UEFI if self.uefi else BootMode.LEGACY_BIOS


def _image_format(disk: Path) -> str:
    info = json.loads(run.run(["qemu-img", "info", "--output=json", disk]).out)
    return str(info["format"])


@contextmanager
def raw_disk(disk: Path) -> Iterator[Path]:
    """The disk as a raw file: itself, or a sparse raw conversion that is deleted afterwards."""
    if not disk.is_file():
        raise UploadError(f"{disk} is not a disk image file", hint="give the path of a built .raw or .qcow2")
    fmt = _image_format(disk)
    if fmt == "raw":
        yield disk
        return
    if fmt not in CONVERTIBLE:
        raise UploadError(
            f"{disk} is a {fmt} image, which cannot be uploaded", hint="give a raw or qcow2 disk"
        )
    with tempfile.TemporaryDirectory(prefix="imgbuild-upload-") as tmp:
        raw = Path(tmp) / "disk.raw"
        # qemu-img writes holes for zero clusters (-S default 4k), so the copy costs only the data.
        run.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", disk, raw])
        yield raw


def _partitions(disk: Path) -> list[dict[str, Any]]:
    result = run.run(["sfdisk", "--json", disk], check=False)
    if result.returncode != 0:
        raise UploadError(f"{disk} has no partition table", hint="give a disk built by imgbuild")
    table = json.loads(result.out)["partitiontable"]
    if table.get("label") != "gpt":
        raise UploadError(f"{disk} has a {table.get('label')} partition table, not GPT")
    return list(table.get("partitions", []))


def _esp_loaders(disk: Path, start: int) -> set[Arch]:
    listed = run.run(
        ["mdir", "-b", "-i", f"{os.fspath(disk)}@@{start}", "::/EFI/BOOT"], env=MTOOLS_ENV, check=False
    )
    if listed.returncode != 0:
        return set()
    names = {line.rsplit("/", 1)[-1].strip().upper() for line in listed.out.splitlines()}
    return {arch for name, arch in LOADERS.items() if name in names}


def _arch_from_result(disk: Path) -> Arch | None:
    """The architecture result.json beside the disk records, if it lists this disk."""
    result_file = disk.parent / "result.json"
    try:
        result = json.loads(result_file.read_text())
        if any(o.get("path") == disk.name for o in result.get("outputs", [])):
            return Arch.parse(result["source"]["arch"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no usable result beside the disk: the disk itself decides
    return None


def inspect(raw: Path, *, named: Path | None = None) -> DiskInfo:
    """Read arch and boot modes from the raw disk `raw` (`named`: the path the user gave, for result.json)."""
    parts = _partitions(raw)
    bios = any(p.get("type", "").upper() == BIOS_BOOT for p in parts)
    loaders: set[Arch] = set()
    for part in parts:
        if part.get("type", "").upper() == ESP:
            loaders |= _esp_loaders(raw, int(part["start"]) * SECTOR)
    roots = {ROOT_TYPES[t] for p in parts if (t := p.get("type", "").upper()) in ROOT_TYPES}
    arch = _arch_from_result(named or raw)
    if arch is None:
        known = set(loaders or roots or ({Arch.X86_64} if bios else set()))
        if len(known) != 1:
            raise UploadError(
                f"cannot tell the architecture of {named or raw} from its partitions and ESP",
                hint="upload a disk built by imgbuild (with its result.json beside it)",
            )
        arch = known.pop()
    uefi = arch in loaders
    if not uefi and not (bios and arch is Arch.X86_64):
        raise UploadError(
            f"{named or raw} has no boot loader for {arch}: no BIOS boot partition and no "
            f"EFI/BOOT/{next(n for n, a in LOADERS.items() if a is arch)} in an ESP",
            hint="build the disk with imgbuild; it installs GRUB for BIOS (x86_64) and UEFI",
        )
    return DiskInfo(path=raw, size=raw.stat().st_size, arch=arch, bios=bios, uefi=uefi)
