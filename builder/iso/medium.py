"""The bootable ISO medium that both ISO targets write: hybrid, so it boots from a CD and, written to a USB
stick, as a disk; BIOS and UEFI on x86_64, UEFI on aarch64.

API (what targets/live_iso.py and the installer ISO use):

    spec = MediumSpec(arch=..., volume_id="DEBIAN-12-LIVE", application_id=..., publisher=...,
                      menu_title="Debian 12 (live)", kernel=Path(...), initrd=Path(...),
                      kernel_args="root=live:CDLABEL=DEBIAN-12-LIVE ...",
                      files={"LiveOS/squashfs.img": Path(...)}, efi_source=deployed_root)
    write_iso(spec, output=Path("out/live.iso"), workdir=scratch_dir)
    boot_images(output)   # {"BIOS", "UEFI"}: the El Torito boot images, as xorriso reports them
    read_pvd(output)      # {"volume_id": ..., "application_id": ..., "publisher": ...}

The medium holds the kernel at /boot/vmlinuz, the initramfs at /boot/initrd.img, GRUB's configuration at
/boot/grub/grub.cfg and `spec.files` at the paths given. The GRUB images carry an early config that finds
the medium by its volume label (`search --label`), so one configuration serves the CD, the USB disk and
either firmware; grub.cfg boots the kernel with `spec.kernel_args` (the caller includes the console
arguments: `console_args(arch)` gives the platform table's).

- BIOS (x86_64): GRUB's `i386-pc-eltorito` image made with the host's grub-mkimage and i386-pc modules
  (grub-pc-bin): firmware-level code, not a program of the target image. Written to a disk, GRUB's
  `boot_hybrid.img` in the MBR loads the same core image (`--grub2-boot-info`), as grub-mkrescue does.
- UEFI: a FAT image (mkfs.fat + mtools: the build host's kernel cannot mount vfat) with the image's own
  shim/GRUB payload or a self-contained GRUB EFI binary built from the image's EFI modules
  (builder.bootloader), at the removable-media path. The image's GRUB gets a stub where its built-in prefix
  looks (`EFI/debian/grub.cfg` for Debian's signed GRUB) that finds the medium by label; it must have the
  modules the medium needs built in (PAYLOAD_GRUB_MODULES: it loads none from the medium, nor any under
  Secure Boot), else the build stops with one line. With a signed shim/GRUB the medium boots with Secure
  Boot enforced (tests/vm/test_secureboot_iso.py). The FAT image is appended to the ISO as GPT partition 2
  (the ESP that firmware finds on a USB disk), and the El Torito EFI boot entry points at the same blocks.
- xorriso writes the ISO beside `output` and it is renamed once complete: no file under the final name on
  failure.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from builder import run
from builder.arch import Arch
from builder.bootloader import OPTIONAL_MODULES, grub_mkimage
from builder.bootloader.efi_chain import grub_image
from builder.bootloader.grub_cfg import grub_quote, split_kernel_args
from builder.bootloader.grub_efi import (
    EFI_SUFFIX,
    _find_ci,
    _inside,
    esp_tree_from_payload,
    find_image_efi_payload,
    removable_path,
)
from builder.bootloader.grub_efi import (
    PLATFORM as EFI_PLATFORM,
)
from builder.disk.esp import populate_fat_image
from builder.errors import ImgbuildError, StageFailed

MiB = 1 << 20
HOST_GRUB_BIOS = Path("/usr/lib/grub/i386-pc")
GRUB_PREFIX = "/boot/grub"
KERNEL_PATH = "boot/vmlinuz"
INITRD_PATH = "boot/initrd.img"
ELTORITO_PATH = "boot/grub/i386-pc/eltorito.img"
CATALOG_PATH = "boot/boot.cat"
# ISO 9660 limits: the volume id is 32 characters, the application and publisher ids 128. The volume id is
# also the label that GRUB and udev (/dev/disk/by-label) find the medium by: letters, digits, _ and -
# (what Image Builder's blueprint allows), so it needs no quoting anywhere.
VOLUME_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
LONG_ID_MAX = 128
_ISO_PATH = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
# Modules every GRUB image of the medium needs: read the ISO (or its partitions on a USB disk), find it by
# label, read grub.cfg and boot Linux.
REQUIRED_MODULES = (
    "iso9660",
    "part_gpt",
    "part_msdos",
    "search",
    "search_label",
    "normal",
    "linux",
    "configfile",
)
# What an image's own GRUB (shim-loaded, from its payload) needs built in to boot the medium: read the label
# stub on the ESP (fat), find the medium by label, read its grub.cfg on the ISO (or its partition on a USB
# disk) and boot Linux. It loads no module under Secure Boot, and the medium carries none for it anyway.
PAYLOAD_GRUB_MODULES = ("fat", *REQUIRED_MODULES)
PLATFORM_MODULES = {"i386-pc": ("biosdisk",), "x86_64-efi": ("fat",), "arm64-efi": ("fat",)}
EFI_PACKAGES = {Arch.X86_64: "grub-efi-amd64-bin", Arch.AARCH64: "grub-efi-arm64-bin"}


class IsoError(ImgbuildError):
    """The ISO medium cannot be made as asked."""


@dataclass(frozen=True)
class MediumSpec:
    arch: Arch
    volume_id: str  # ISO 9660 volume id (<= 32 of [A-Za-z0-9_-]); the label the boot config searches for
    application_id: str  # <= 128 characters
    publisher: str  # <= 128 characters
    menu_title: str  # the GRUB menu entry's title
    kernel: Path  # host path of the kernel to boot
    initrd: Path  # host path of the initramfs
    kernel_args: str  # the kernel command line (without kernel and initrd)
    files: Mapping[str, Path]  # path inside the ISO -> host path (a squashfs, a compressed disk image)
    efi_source: Path  # the image's deployed root (or checkout): its UEFI loader is taken from there
    timeout: int = 5  # seconds the GRUB menu waits

    def __post_init__(self) -> None:
        check_ids(self.volume_id, self.application_id, self.publisher)
        for path in self.files:
            if not _ISO_PATH.fullmatch(path) or ".." in PurePosixPath(path).parts:
                raise IsoError(
                    f"{path!r} is not a plain relative path for a file on the ISO",
                    hint="use letters, digits, '.', '_', '-' and '/'",
                )
            if path in (KERNEL_PATH, INITRD_PATH) or path.startswith(("boot/grub/", "EFI/")):
                raise IsoError(f"{path!r} is where the medium keeps its own boot files")


def check_ids(volume_id: str, application_id: str, publisher: str) -> None:
    """Refuse ISO 9660 ids the medium cannot carry (one line each)."""
    if not VOLUME_ID.fullmatch(volume_id):
        raise IsoError(
            f"ISO volume id {volume_id!r} is not 1 to 32 letters, digits, '_' or '-'",
            hint="set [customizations.iso] volume_id to such a name (e.g. Debian-12-live)",
        )
    for what, value in (("application id", application_id), ("publisher", publisher)):
        if len(value) > LONG_ID_MAX or not value.isprintable():
            raise IsoError(
                f"ISO {what} {value[:40]!r}... is longer than {LONG_ID_MAX} characters or not printable",
                hint=f"shorten [customizations.iso] {what.replace(' ', '_')}",
            )


def console_args(arch: Arch, platform: str = "metal") -> tuple[str, ...]:
    """The serial console arguments of `platform` (targets/platforms.py) for `arch`."""
    # Imported here: the targets package imports every target, and the ISO targets import this module.
    from targets.platforms import PLATFORMS, Platform

    return PLATFORMS[Platform(platform)].consoles[arch]


def early_config(volume_id: str) -> str:
    """Built into every GRUB image of the medium: find the medium by label, then read its grub.cfg."""
    return f"search --no-floppy --label --set=root {volume_id}\nset prefix=($root){GRUB_PREFIX}\n"


def grub_cfg(spec: MediumSpec) -> str:
    args = " ".join(grub_quote(a) for a in split_kernel_args(spec.kernel_args))
    return (
        "# Written by imgbuild: boots the kernel and initramfs of this medium.\n"
        f"search --no-floppy --label --set=root {spec.volume_id}\n"
        # The first 16550 UART on x86 (GRUB has no such port on arm64, where the firmware console is serial).
        'if [ "$grub_cpu" = "i386" -o "$grub_cpu" = "x86_64" ]; then\n'
        "    if serial --unit=0 --speed=115200; then\n"
        "        terminal_input serial console\n"
        "        terminal_output serial console\n"
        "    fi\n"
        "fi\n"
        f"set timeout={int(spec.timeout)}\n"
        "set default=0\n"
        f"menuentry {grub_quote(spec.menu_title)} {{\n"
        f"    linux /{KERNEL_PATH}{' ' + args if args else ''}\n"
        f"    initrd /{INITRD_PATH}\n"
        "}\n"
    )


def _modules(grub_dir: Path, platform: str) -> list[str]:
    wanted = [*PLATFORM_MODULES[platform], *REQUIRED_MODULES]
    missing = [m for m in wanted if not (grub_dir / f"{m}.mod").is_file()]
    if missing:
        raise IsoError(f"{grub_dir} lacks the GRUB modules {', '.join(missing)}")
    return [*wanted, *(m for m in OPTIONAL_MODULES if (grub_dir / f"{m}.mod").is_file() and m not in wanted)]


def label_stub(volume_id: str) -> str:
    """The grub.cfg beside an image's own (shim-loaded) GRUB: hand over to the medium's grub.cfg."""
    return (
        f"search --no-floppy --label --set=root {volume_id}\n"
        f"set prefix=($root){GRUB_PREFIX}\n"
        "configfile $prefix/grub.cfg\n"
    )


def check_payload_grub(payload: Path, arch: Arch) -> None:
    """Refuse (one line) an image's GRUB that cannot boot the medium: one whose built-in modules lack what
    the label stub and the medium's grub.cfg use (Debian's signed GRUB has them all)."""
    suffix = EFI_SUFFIX[arch]
    for vendor in sorted(p for p in payload.iterdir() if p.is_dir() and p.name.upper() != "BOOT"):
        grub = _find_ci(vendor, f"grub{suffix}.efi")
        if grub is None:
            continue
        image = grub_image(grub.read_bytes())
        if image is None:
            raise IsoError(f"the image's {vendor.name}/{grub.name} is not a GRUB image the ISO can boot")
        missing = [m for m in PAYLOAD_GRUB_MODULES if m not in image.modules]
        if missing:
            raise IsoError(
                f"the image's {vendor.name}/{grub.name} lacks the built-in GRUB modules {', '.join(missing)} "
                "that an ISO needs (it loads no module from the medium, nor any under Secure Boot)",
                hint="ship a GRUB with these modules built in (Debian's grub-efi-amd64-signed has them), or "
                "remove the image's EFI payload so that GRUB is built from the image's modules",
            )
        return


def efi_tree(spec: MediumSpec, tree: Path) -> None:
    """The UEFI boot files under `tree`: the image's shim/GRUB payload, else GRUB built from its modules."""
    payload = find_image_efi_payload(spec.efi_source, spec.arch)
    if payload is not None:
        check_payload_grub(payload, spec.arch)
        for stub in esp_tree_from_payload(payload, tree, spec.arch, boot_fs_uuid="-", prefix=GRUB_PREFIX):
            stub.write_text(label_stub(spec.volume_id))
        return
    platform = EFI_PLATFORM[spec.arch]
    grub_dir = spec.efi_source / "usr/lib/grub" / platform
    if not (grub_dir / "moddep.lst").is_file() or not _inside(spec.efi_source, grub_dir):
        raise IsoError(
            f"the image has no UEFI boot loader for a UEFI ISO (no shim/GRUB EFI binaries, no "
            f"/usr/lib/grub/{platform})",
            hint=f"add GRUB's EFI modules to the image (Debian: {EFI_PACKAGES[spec.arch]})",
        )
    grub_mkimage(
        platform=platform,
        grub_dir=grub_dir,
        output=tree / removable_path(spec.arch),
        modules=_modules(grub_dir, platform),
        config=early_config(spec.volume_id),
        prefix=GRUB_PREFIX,
    )


def _tree_bytes(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


def fat_image(tree: Path, image: Path) -> None:
    """A FAT filesystem image holding `tree`, sized to it with room for FAT's own structures."""
    size = -(-(_tree_bytes(tree) + 2 * MiB) // MiB) * MiB
    run.run(["mkfs.fat", "-C", "-n", "EFIBOOT", "-i", "1A2B3C4D", image, str(size // 1024)])
    populate_fat_image(image, tree)


def bios_image(spec: MediumSpec, output: Path) -> Path:
    """GRUB's El Torito core image from the host's i386-pc modules; returns boot_hybrid.img's path."""
    hybrid = HOST_GRUB_BIOS / "boot_hybrid.img"
    if not (HOST_GRUB_BIOS / "cdboot.img").is_file() or not hybrid.is_file():
        raise IsoError(
            f"the host's {HOST_GRUB_BIOS} has no cdboot.img/boot_hybrid.img for a BIOS-bootable ISO",
            hint="install the Debian package grub-pc-bin",
        )
    grub_mkimage(
        platform="i386-pc-eltorito",
        grub_dir=HOST_GRUB_BIOS,
        output=output,
        modules=_modules(HOST_GRUB_BIOS, "i386-pc"),
        config=early_config(spec.volume_id),
        prefix=GRUB_PREFIX,
    )
    return hybrid


def _graft(iso_path: str, host: Path) -> str:
    """A mkisofs graft point; `=` and `\\` in the host path are escaped as xorriso wants."""
    escaped = os.fspath(host.resolve()).replace("\\", "\\\\").replace("=", "\\=")
    return f"{iso_path}={escaped}"


def xorriso_argv(
    spec: MediumSpec, output: Path, tree: Path, efi_img: Path, hybrid_mbr: Path | None
) -> list[str]:
    argv = [
        "xorriso",
        "-as",
        "mkisofs",
        "-o",
        os.fspath(output),
        "-iso-level",
        "3",
        "-r",
        "-J",
        "-joliet-long",
        "-V",
        spec.volume_id,
        "-A",
        spec.application_id,
        "-publisher",
        spec.publisher,
        # The ISO's own partition starts after 16 blocks, leaving room for the GPT and MBR of a USB disk.
        "-partition_offset",
        "16",
    ]
    if hybrid_mbr is not None:
        argv += ["--grub2-mbr", os.fspath(hybrid_mbr), "--mbr-force-bootable"]
    argv += ["-append_partition", "2", "0xef", os.fspath(efi_img), "-appended_part_as_gpt"]
    argv += ["-c", CATALOG_PATH]
    if hybrid_mbr is not None:
        argv += ["-b", ELTORITO_PATH, "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"]
        argv += ["--grub2-boot-info", "-eltorito-alt-boot"]
    # The El Torito EFI image is the appended ESP itself (no second copy inside the ISO).
    argv += ["-e", "--interval:appended_partition_2:all::", "-no-emul-boot"]
    argv += ["-graft-points", os.fspath(tree)]
    argv += [_graft(KERNEL_PATH, spec.kernel), _graft(INITRD_PATH, spec.initrd)]
    argv += [_graft(path, host) for path, host in sorted(spec.files.items())]
    return argv


def write_iso(spec: MediumSpec, output: Path, workdir: Path) -> None:
    """Write the hybrid ISO `output` from `spec`; `workdir` holds the intermediate files (removed after)."""
    for what, path in (("kernel", spec.kernel), ("initramfs", spec.initrd), *spec.files.items()):
        if not Path(path).is_file():
            raise IsoError(f"the {what} for the ISO, {path}, is not a file")
    scratch = Path(tempfile.mkdtemp(prefix="iso-medium-", dir=workdir))
    partial = output.with_name(f".{output.name}.partial")
    try:
        tree = scratch / "tree"
        (tree / "boot/grub").mkdir(parents=True)
        (tree / "boot/grub/grub.cfg").write_text(grub_cfg(spec))
        esp = scratch / "esp"
        esp.mkdir()
        efi_tree(spec, esp)
        efi_img = scratch / "efiboot.img"
        fat_image(esp, efi_img)
        hybrid = bios_image(spec, tree / ELTORITO_PATH) if spec.arch is Arch.X86_64 else None
        output.parent.mkdir(parents=True, exist_ok=True)
        run.run(
            xorriso_argv(spec, partial, tree, efi_img, hybrid), hint="is xorriso installed (Debian: xorriso)?"
        )
        expected = {"BIOS", "UEFI"} if spec.arch is Arch.X86_64 else {"UEFI"}
        found = boot_images(partial)
        if found != expected:
            raise IsoError(
                f"xorriso wrote El Torito boot images {sorted(found)}, expected {sorted(expected)}"
            )
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)


def report_el_torito(iso: Path) -> str:
    """`xorriso -indev ISO -report_el_torito plain`: the boot catalog and its images."""
    return run.run(["xorriso", "-indev", iso, "-report_el_torito", "plain"]).out


def boot_images(iso: Path) -> set[str]:
    """The platforms of the El Torito boot images (BIOS, UEFI), from xorriso's report."""
    found = set()
    for line in report_el_torito(iso).splitlines():
        # El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4          39
        if line.startswith("El Torito boot img"):
            fields = line.split(":", 1)[1].split()
            if len(fields) >= 2:
                found.add(fields[1])
    return found


def read_pvd(iso: Path) -> dict[str, str]:
    """The primary volume descriptor's ids as xorriso reads them back (`-pvd_info`)."""
    names = {"Volume Id": "volume_id", "App Id": "application_id", "Publisher Id": "publisher"}
    found = {}
    for line in run.run(["xorriso", "-indev", iso, "-pvd_info"]).out.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in names:
            found[names[key.strip()]] = value.strip()
    return found


def check_written(iso: Path, arch: Arch, volume_id: str) -> dict[str, object]:
    """Read a written ISO back with xorriso: the El Torito boot images each firmware of `arch` needs
    (BIOS and UEFI on x86_64, UEFI on aarch64) and the volume id the medium is found by. Returns the
    result.json fields `volume_id` and `boot_modes`."""
    expected = {"BIOS", "UEFI"} if arch is Arch.X86_64 else {"UEFI"}
    found = boot_images(iso)
    if found != expected:
        raise StageFailed(
            f"{iso.name} has El Torito boot images {sorted(found)}, expected {sorted(expected)}"
        )
    written = read_pvd(iso).get("volume_id")
    if written != volume_id:
        raise StageFailed(f"{iso.name} has volume id {written!r}, expected {volume_id!r}")
    return {"volume_id": written, "boot_modes": sorted(m.lower() for m in found)}
