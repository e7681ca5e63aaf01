"""Per-platform image settings, as one typed table.

A platform is where the image will run (qemu, a bare-metal machine, a cloud). It decides the kernel arguments
and boot settings baked into the deployment: which serial console the cloud's log viewer reads, the
`ignition.platform.id=` an Ignition-based image needs to find its config, and the GRUB menu timeout. Every
target names its default platform (`targets/<name>.py`); `--platform` overrides it for all targets of a
build. Targets whose settings agree share one deployment (one disk) in the manifest.

Consoles: the last `console=` becomes /dev/console (where systemd writes). x86_64 clouds all offer the first
16550 UART (ttyS0) as their serial log (EC2 "get system log", Azure boot diagnostics, GCE serial port 1,
vSphere serial port), so they share `console=tty0 console=ttyS0,115200n8`, as coreos-assembler's platform
table does for aws, azure, qemu and vmware; GCE gets tty0 as well (harmless: it has no screen) so that an
image without Ignition deploys once for qemu, VMware and GCE. On aarch64 qemu's virt machine, Azure and GCE
expose a PL011 (ttyAMA0); EC2 Graviton instances a 16550 (ttyS0): the aws entry lists both, ttyS0 last.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from builder.arch import Arch
from builder.errors import ImgbuildError


class Platform(enum.StrEnum):
    QEMU = "qemu"
    METAL = "metal"
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"
    VMWARE = "vmware"


@dataclass(frozen=True)
class PlatformEntry:
    """One row of the table: what a platform needs, per architecture."""

    consoles: dict[Arch, tuple[str, ...]]  # console= kernel arguments, /dev/console last
    extra_kargs: tuple[str, ...] = ()  # other kernel arguments the platform needs
    grub_timeout: int = 1  # seconds the GRUB menu waits (nobody watches a cloud console)
    ignition_id: str | None = None  # ignition.platform.id= value, for images that use Ignition


_SERIAL_X86 = ("console=tty0", "console=ttyS0,115200n8")
_SERIAL_ARM = ("console=tty0", "console=ttyAMA0,115200n8")

PLATFORMS: dict[Platform, PlatformEntry] = {
    Platform.QEMU: PlatformEntry({Arch.X86_64: _SERIAL_X86, Arch.AARCH64: _SERIAL_ARM}, ignition_id="qemu"),
    # A machine with a screen: the menu waits long enough to be seen.
    Platform.METAL: PlatformEntry(
        {Arch.X86_64: _SERIAL_X86, Arch.AARCH64: _SERIAL_ARM}, grub_timeout=5, ignition_id="metal"
    ),
    Platform.AWS: PlatformEntry(
        {Arch.X86_64: _SERIAL_X86, Arch.AARCH64: (*_SERIAL_ARM, "console=ttyS0,115200n8")},
        ignition_id="aws",
    ),
    Platform.AZURE: PlatformEntry({Arch.X86_64: _SERIAL_X86, Arch.AARCH64: _SERIAL_ARM}, ignition_id="azure"),
    Platform.GCP: PlatformEntry({Arch.X86_64: _SERIAL_X86, Arch.AARCH64: _SERIAL_ARM}, ignition_id="gcp"),
    Platform.VMWARE: PlatformEntry(
        {Arch.X86_64: _SERIAL_X86, Arch.AARCH64: _SERIAL_ARM}, ignition_id="vmware"
    ),
}


@dataclass(frozen=True)
class ImageSettings:
    """What a deployment gets from its platform. Equal settings mean one shared deployment."""

    kernel_args: tuple[str, ...]
    grub_timeout: int


def parse_platform(text: str) -> Platform:
    try:
        return Platform(text.strip().lower())
    except ValueError:
        raise ImgbuildError(
            f"unknown platform {text!r}", hint=f"use one of: {', '.join(p.value for p in Platform)}"
        ) from None


def settings(platform: Platform, arch: Arch, *, ignition: bool) -> ImageSettings:
    """The settings of `platform` for an image of `arch`; `ignition.platform.id=` only if it uses Ignition."""
    entry = PLATFORMS[platform]
    kargs = [*entry.consoles[arch], *entry.extra_kargs]
    if ignition and entry.ignition_id is not None:
        kargs.append(f"ignition.platform.id={entry.ignition_id}")
    return ImageSettings(tuple(kargs), entry.grub_timeout)
