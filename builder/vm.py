"""Booting a disk image in qemu and watching its serial console.

The image is never modified: qemu writes to a throwaway qcow2 overlay in a temporary directory. Kernel
arguments for one boot (`append`) are added to the BLS entries and grub.cfg inside that overlay (see
builder.bootloader.kargs), so they reach the kernel whatever GRUB (Debian's menuentries or Fedora's blscfg)
the image has.
"""

from __future__ import annotations

import codecs
import enum
import functools
import json
import logging
import os
import re
import select
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from builder import run
from builder.arch import Arch
from builder.bootloader.kargs import append_kernel_args
from builder.errors import ImgbuildError
from builder.sizefmt import human

log = logging.getLogger(__name__)

QEMU = {Arch.X86_64: "qemu-system-x86_64", Arch.AARCH64: "qemu-system-aarch64"}
# (code, vars template) pairs, preferred first. The vars file is copied: firmware writes to it.
UEFI_FIRMWARE = {
    Arch.X86_64: (
        ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
        ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ),
    Arch.AARCH64: (("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),),
}
# Secure Boot: firmware with Microsoft's keys (KEK, db: the UEFI CA that signs shim) enrolled and Secure Boot
# on. x86_64: the SMM build of OVMF (q35 with smm=on and the pflash "secure" property, so that only SMM code
# can write the variables, as on real machines). aarch64: AAVMF has no SMM; AAVMF_CODE.ms.fd is the plain
# code and AAVMF_VARS.ms.fd enrols the keys and turns Secure Boot on, so signatures are enforced but the
# variable store is not protected from the OS.
SECURE_FIRMWARE = {
    Arch.X86_64: (("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),),
    Arch.AARCH64: (("/usr/share/AAVMF/AAVMF_CODE.ms.fd", "/usr/share/AAVMF/AAVMF_VARS.ms.fd"),),
}
FIRMWARE_PACKAGE = {Arch.X86_64: "ovmf", Arch.AARCH64: "qemu-efi-aarch64"}
TAIL_LINES = 30
KVM_PROBE_SECONDS = 4.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>cM78]")


class Firmware(enum.StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    UEFI_SECURE = "uefi-secure"  # UEFI with Microsoft's keys enrolled and Secure Boot enforced


class Medium(enum.StrEnum):
    """How the image is attached: a virtio disk, a CD-ROM (an ISO), or a USB stick (an ISO written to one)."""

    DISK = "disk"
    CDROM = "cdrom"
    USB = "usb"


ISO_MAGIC_OFFSET = (
    0x8001  # ISO 9660: the first volume descriptor (sector 16) says "CD001" after its type byte
)


class BootFailed(ImgbuildError):
    """The VM did not reach the marker."""

    exit_code = 1


class BootTimeout(BootFailed):
    """The marker did not appear before the timeout."""


class NotAnImage(ImgbuildError):
    """The file to boot is missing or not a disk image."""


@dataclass(frozen=True)
class BootResult:
    marker_line: str | None  # the console line that carried the marker
    seconds: float  # from starting qemu to the marker (or to qemu's exit)
    console_tail: str  # the last console lines


def image_format(image: Path) -> str:
    """The image's format as `qemu-img info` detects it (raw, qcow2, vmdk, vpc...)."""
    if not image.is_file():
        raise NotAnImage(f"{image} does not exist or is not a file")
    if is_iso(image):
        return "iso"
    result = run.run(["qemu-img", "info", "--output=json", image], check=False)
    if result.returncode != 0:
        raise NotAnImage(f"{image} is not a disk image qemu can read: {result.stderr.decode().strip()}")
    fmt = str(json.loads(result.stdout)["format"])
    if fmt == "raw" and _fixed_vhd(image):
        return "vpc"  # a fixed VHD has no header for qemu to probe: its footer is the last 512 bytes
    if fmt == "raw":  # qemu calls anything it does not recognise raw: look for a boot sector
        if image.stat().st_size < 1024 * 1024:
            raise NotAnImage(f"{image} is too small to be a disk image ({human(image.stat().st_size)})")
        with open(image, "rb") as f:
            f.seek(510)
            if f.read(2) != b"\x55\xaa":
                raise NotAnImage(f"{image} is not a disk image: it has no MBR or GPT partition table")
    return fmt


def is_iso(image: Path) -> bool:
    """Whether `image` is an ISO 9660 filesystem image (a CD image; a hybrid one is also a disk)."""
    with open(image, "rb") as f:
        f.seek(ISO_MAGIC_OFFSET)
        return f.read(5) == b"CD001"


def _fixed_vhd(image: Path) -> bool:
    if image.stat().st_size < 512:
        return False
    with open(image, "rb") as f:
        f.seek(-512, os.SEEK_END)
        return f.read(8) == b"conectix"


@functools.cache
def kvm_usable() -> bool:
    """Whether KVM really runs guests here (a /dev/kvm that exists may still fail every guest).

    UEFI firmware executes x87 instructions within a second; where KVM cannot emulate them qemu reports
    "KVM internal error" and stops. A probe that survives a few seconds means KVM works.
    """
    arch = Arch.host()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or run.which(QEMU[arch]) is None:
        return False
    firmware = next((code for code, _ in UEFI_FIRMWARE[arch] if Path(code).is_file()), None)
    if firmware is None:
        return False
    machine = ["-machine", "q35"] if arch is Arch.X86_64 else ["-machine", "virt", "-cpu", "host"]
    argv = [QEMU[arch], "-accel", "kvm", *machine, "-m", "128", "-nodefaults", "-display", "none"]
    argv += ["-serial", "none", "-no-reboot", "-drive", f"if=pflash,format=raw,readonly=on,file={firmware}"]
    with tempfile.TemporaryFile() as err, run.spawn(argv, stdout=run.DEVNULL, stderr=err, check=False) as p:
        deadline = time.monotonic() + KVM_PROBE_SECONDS
        usable = True
        while time.monotonic() < deadline:
            if p.poll() is not None:
                usable = False
                break
            err.seek(0)
            said = err.read()
            if b"KVM internal error" in said or b"emulation failure" in said:
                usable = False
                break
            time.sleep(0.1)
        run.terminate(p)
    log.debug("KVM usable: %s", usable)
    return usable


def _firmware_args(arch: Arch, firmware: Firmware, workdir: Path) -> list[str]:
    if firmware is Firmware.BIOS:
        if arch is not Arch.X86_64:
            raise ImgbuildError(f"{arch} has no BIOS firmware", hint="boot it with --firmware uefi")
        return []  # qemu's default: SeaBIOS
    secure = firmware is Firmware.UEFI_SECURE
    for code, vars_template in (SECURE_FIRMWARE if secure else UEFI_FIRMWARE)[arch]:
        if Path(code).is_file() and Path(vars_template).is_file():
            vars_copy = workdir / "efivars.fd"
            shutil.copyfile(vars_template, vars_copy)
            smm = ["-global", "driver=cfi.pflash01,property=secure,value=on"]
            return [
                *(smm if secure and arch is Arch.X86_64 else []),
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]
    raise ImgbuildError(
        f"no {'Secure Boot ' if secure else ''}UEFI firmware for {arch} found",
        hint=f"install the Debian package {FIRMWARE_PACKAGE[arch]}",
    )


def medium_args(
    arch: Arch,
    medium: Medium,
    path: Path,
    fmt: str,
    *,
    drive_id: str | None = None,
    bootindex: int = 1,
    readonly: bool = False,
) -> list[str]:
    """The qemu devices that attach `path` as `medium` at `bootindex` in the boot order."""
    if medium is Medium.CDROM:
        drive_id = drive_id or "cd0"
        drive = f"file={path},format=raw,if=none,id={drive_id},media=cdrom,readonly=on"
        # A SATA CD on the PC (q35's AHCI: what SeaBIOS and OVMF boot from); arm64's virt machine has no
        # ATA controller: a SCSI CD on virtio-scsi there.
        if arch is Arch.X86_64:
            return ["-drive", drive, "-device", f"ide-cd,drive={drive_id},bootindex={bootindex}"]
        return [
            "-drive",
            drive,
            "-device",
            "virtio-scsi-pci,id=scsi0",
            "-device",
            f"scsi-cd,drive={drive_id},bootindex={bootindex}",
        ]
    drive_id = drive_id or "disk0"
    drive = f"file={path},format={fmt},if=none,id={drive_id},cache=unsafe" + (
        ",readonly=on" if readonly else ""
    )
    if medium is Medium.USB:
        return [
            "-drive",
            drive,
            "-device",
            "qemu-xhci,id=xhci",
            "-device",
            f"usb-storage,drive={drive_id},removable=on,bootindex={bootindex}",
        ]
    return ["-drive", drive, "-device", f"virtio-blk-pci,drive={drive_id},bootindex={bootindex}"]


def qemu_argv(
    arch: Arch,
    firmware: Firmware,
    disk: Path,
    workdir: Path,
    *,
    memory_mib: int,
    smp: int,
    medium: Medium = Medium.DISK,
    disk_format: str = "qcow2",
) -> list[str]:
    kvm = arch is Arch.host() and kvm_usable()
    if arch is Arch.X86_64:
        # OVMF's Secure Boot build keeps its variables in SMM: the machine needs SMM emulation.
        q35 = "q35,smm=on" if firmware is Firmware.UEFI_SECURE else "q35"
        machine = ["-machine", q35, "-accel", "kvm" if kvm else "tcg"]
    else:
        machine = [
            "-machine",
            "virt",
            "-accel",
            "kvm" if kvm else "tcg",
            "-cpu",
            "host" if kvm else "cortex-a57",
        ]
    return [
        QEMU[arch],
        *machine,
        "-m",
        str(memory_mib),
        "-smp",
        str(smp),
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        *_firmware_args(arch, firmware, workdir),
        *medium_args(arch, medium, disk, disk_format),
    ]


def boot(
    image: Path,
    *,
    arch: Arch,
    firmware: Firmware,
    timeout: float,
    marker: str | None,
    append: str | None = None,
    console: TextIO | None = None,
    memory_mib: int = 1024,
    smp: int = 2,
    medium: Medium | None = None,
) -> BootResult:
    """Boot `image` until `marker` appears on the serial console (or, without a marker, until it stops).

    `medium` defaults to a CD-ROM for an ISO and a disk otherwise; an ISO can also be booted as a USB stick
    or a disk (a hybrid ISO is both). The console is copied to `console` as it arrives. Raises BootTimeout
    when `timeout` seconds pass first, BootFailed when the VM stops first; both carry the last console lines.
    """
    fmt = image_format(image)
    medium = medium or (Medium.CDROM if fmt == "iso" else Medium.DISK)
    if medium is not Medium.DISK and fmt != "iso":
        raise NotAnImage(f"{image} is not an ISO image: only an ISO boots as a {medium.value}")
    if append and fmt == "iso":
        raise ImgbuildError(
            f"{image} is an ISO: its kernel arguments are fixed when it is built",
            hint="build it with the arguments in the blueprint's [customizations.kernel] append",
        )
    with tempfile.TemporaryDirectory(prefix="imgbuild-vm-") as tmp:
        workdir = Path(tmp)
        if medium is Medium.CDROM:
            target = image.resolve()  # read-only: nothing to protect
        else:
            target = workdir / "overlay.qcow2"
            backing = "raw" if fmt == "iso" else fmt
            run.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image.resolve(), "-F", backing, target])
        if append:
            tcg = not kvm_usable()
            # Under TCG on a busy host the kernel's timer check can fail ("IO-APIC + timer doesn't work",
            # a panic at 0.05 s, seen with two guests on two cores); virtual-machine images pass
            # no_timer_check for the same reason.
            append_kernel_args(target, f"{append} no_timer_check" if tcg else append, tcg=tcg)
        argv = qemu_argv(
            arch,
            firmware,
            target,
            workdir,
            memory_mib=memory_mib,
            smp=smp,
            medium=medium,
            disk_format="raw" if medium is Medium.CDROM else "qcow2",
        )
        stderr_path = workdir / "qemu.stderr"
        with open(stderr_path, "wb") as err:
            return _watch(argv, err, stderr_path, timeout=timeout, marker=marker, console=console)


def _watch(
    argv: list[str],
    err: IO[bytes],
    stderr_path: Path,
    *,
    timeout: float,
    marker: str | None,
    console: TextIO | None,
) -> BootResult:
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    pending = ""
    # Incremental, so that a UTF-8 character split between two reads is not mangled.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    started = time.monotonic()
    deadline = started + timeout
    with run.spawn(argv, stdout=run.PIPE, stderr=err, check=False) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail.append(_clean([pending])[0])
                    waited_for = f"no {marker!r} on the console" if marker else "the VM did not stop"
                    raise BootTimeout(
                        f"{waited_for} within {timeout:.0f} s; last lines:\n" + "\n".join(tail).rstrip(),
                        hint="raise --timeout (a TCG boot is slow) or look at the console output above",
                    )
                ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break  # qemu exited
                text = decoder.decode(chunk)
                if console is not None:
                    console.write(text)
                    console.flush()
                pending += text
                *lines, pending = pending.split("\n")
                # Whole lines only, so that the result carries the marker's whole line.
                for line in _clean(lines):
                    tail.append(line)
                    if marker is not None and marker in line:
                        return BootResult(line, time.monotonic() - started, "\n".join(tail))
        finally:
            run.terminate(proc)
    last = _clean([pending])[0]
    tail.append(last)
    seconds = time.monotonic() - started
    if marker is None or marker in last:
        return BootResult(last if marker else None, seconds, "\n".join(tail))
    qemu_err = stderr_path.read_text(errors="replace").strip().splitlines()
    raise BootFailed(
        f"the VM stopped after {seconds:.0f} s without printing {marker!r}; last lines:\n"
        + "\n".join(tail).rstrip()
        + (f"\nqemu: {qemu_err[-1]}" if qemu_err else ""),
        hint="the console output above shows how far it got",
    )


def _clean(lines: list[str]) -> list[str]:
    return [_ANSI.sub("", line).replace("\r", "").rstrip() for line in lines]


def installer_argv(
    arch: Arch,
    firmware: Firmware,
    medium: Path,
    kind: Medium,
    disk: Path,
    workdir: Path,
    *,
    memory_mib: int,
    smp: int,
) -> list[str]:
    """qemu booting the ISO `medium` as a CD or a USB stick (first in the boot order), with the qcow2 `disk`
    as a writable virtio disk (the installer's target, written in place)."""
    argv = qemu_argv(arch, firmware, disk, workdir, memory_mib=memory_mib, smp=smp)
    argv[-1] = "virtio-blk-pci,drive=disk0,bootindex=2"
    argv[-3] += ",discard=unmap"  # the installer zeroes the image's range with BLKZEROOUT: cheap on qcow2
    return argv + medium_args(arch, kind, medium.resolve(), "raw", drive_id="medium0", readonly=True)


def boot_installer(
    medium: Path,
    kind: Medium,
    disk: Path,
    *,
    arch: Arch,
    firmware: Firmware,
    timeout: float,
    marker: str | None = None,
    console: TextIO | None = None,
    memory_mib: int = 1024,
    smp: int = 2,
) -> BootResult:
    """Boot the installer ISO `medium` with `disk` (a qcow2, written in place) attached, until the guest
    powers off (`marker` None) or `marker` appears on the console. BootTimeout when neither happens."""
    if image_format(disk) != "qcow2":
        raise NotAnImage(f"{disk}: the installer's target disk must be a qcow2 image")
    with tempfile.TemporaryDirectory(prefix="imgbuild-vm-") as tmp:
        workdir = Path(tmp)
        argv = installer_argv(arch, firmware, medium, kind, disk, workdir, memory_mib=memory_mib, smp=smp)
        stderr_path = workdir / "qemu.stderr"
        with open(stderr_path, "wb") as err:
            return _watch(argv, err, stderr_path, timeout=timeout, marker=marker, console=console)
