"""GRUB for UEFI: the ESP tree, either from the image's own shim+GRUB payload or a GRUB built here.

An image that ships a signed payload (Fedora-style: `usr/lib/bootupd/updates/EFI` or
`usr/lib/ostree-boot/efi/EFI`) gets that tree copied as it is, as bootupd does, plus a `grub.cfg` stub in the
vendor directory that finds /boot by UUID. Otherwise GRUB is built from the image's (or the host's) EFI
modules as one self-contained binary at the removable-media path `EFI/BOOT/BOOTX64.EFI` / `BOOTAA64.EFI`,
which firmware boots without any NVRAM entry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from builder.arch import Arch
from builder.bootloader import BootloaderError, early_config, grub_mkimage, modules_for

PLATFORM = {Arch.X86_64: "x86_64-efi", Arch.AARCH64: "arm64-efi"}
EFI_SUFFIX = {Arch.X86_64: "x64", Arch.AARCH64: "aa64"}
# Where images carry their EFI payload, the newer layout first.
PAYLOAD_DIRS = ("usr/lib/bootupd/updates/EFI", "usr/lib/ostree-boot/efi/EFI")
EFI_MODULES = ("fat", "part_gpt")


def removable_path(arch: Arch) -> str:
    """The path firmware boots when it has no boot entry: EFI/BOOT/BOOTX64.EFI or BOOTAA64.EFI."""
    return f"EFI/BOOT/BOOT{EFI_SUFFIX[arch].upper()}.EFI"


def _inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink resolved, stays under `root` (image content is untrusted)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _find_ci(directory: Path, name: str) -> Path | None:
    """The entry of `directory` called `name`, ignoring case (FAT and vendors disagree on case)."""
    for entry in sorted(directory.iterdir()):
        if entry.name.lower() == name.lower():
            return entry
    return None


def find_image_efi_payload(deploy_root: Path, arch: Arch) -> Path | None:
    """The image's `EFI` payload directory when it ships a GRUB (or shim) for `arch`, else None."""
    suffix = EFI_SUFFIX[arch]
    for rel in PAYLOAD_DIRS:
        efi = deploy_root / rel
        if not efi.is_dir() or not _inside(deploy_root, efi):
            continue
        for vendor in sorted(p for p in efi.iterdir() if p.is_dir()):
            if _find_ci(vendor, f"grub{suffix}.efi") or _find_ci(vendor, f"shim{suffix}.efi"):
                return efi
    return None


def build_grub_efi(
    arch: Arch, grub_dir: Path, output: Path, *, boot_fs_uuid: str, prefix: str, boot_fs: str = "ext4"
) -> None:
    """Build a self-contained GRUB EFI binary that finds /boot by UUID and reads `<prefix>/grub.cfg`."""
    modules = modules_for(grub_dir, boot_fs, EFI_MODULES)
    grub_mkimage(
        platform=PLATFORM[arch],
        grub_dir=grub_dir,
        output=output,
        modules=modules,
        config=early_config(boot_fs_uuid, prefix, None),
        prefix=prefix,
    )


def build_esp_tree(
    tree: Path, arch: Arch, *, grub_dir: Path, boot_fs_uuid: str, boot_fs: str, prefix: str = "/grub2"
) -> Path:
    """Write an ESP tree holding only our GRUB at the removable-media path; returns that file."""
    output = tree / removable_path(arch)
    build_grub_efi(arch, grub_dir, output, boot_fs_uuid=boot_fs_uuid, prefix=prefix, boot_fs=boot_fs)
    return output


def grub_cfg_stub(boot_fs_uuid: str, prefix: str) -> str:
    """The ESP's vendor grub.cfg: hand over to the grub.cfg on the /boot filesystem."""
    return (
        f"search --no-floppy --fs-uuid --set=dev {boot_fs_uuid}\n"
        "set root=$dev\n"
        f"set prefix=($dev){prefix}\n"
        "export prefix\n"
        "configfile $prefix/grub.cfg\n"
    )


def esp_tree_from_payload(
    payload: Path, tree: Path, arch: Arch, *, boot_fs_uuid: str, prefix: str = "/grub2"
) -> list[Path]:
    """Copy the image's EFI payload to `tree/EFI` and add the grub.cfg stubs; returns the stubs written.

    When the payload has no `EFI/BOOT/BOOT<ARCH>.EFI`, the vendor's shim (or GRUB) is put there, with the
    GRUB binary beside it, since shim loads GRUB from its own directory.
    """
    suffix = EFI_SUFFIX[arch]
    efi = tree / "EFI"
    for src in payload.rglob("*"):
        if src.is_symlink():
            raise BootloaderError(f"the image's EFI payload has a symlink {src.relative_to(payload)}")
    shutil.copytree(payload, efi, dirs_exist_ok=True)
    stubs = []
    grub_binary: Path | None = None
    shim: Path | None = None
    for vendor in sorted(p for p in efi.iterdir() if p.is_dir() and p.name.upper() != "BOOT"):
        grub = _find_ci(vendor, f"grub{suffix}.efi")
        if grub is None:
            continue
        grub_binary = grub_binary or grub
        shim = shim or _find_ci(vendor, f"shim{suffix}.efi")
        stub = vendor / "grub.cfg"
        stub.write_text(grub_cfg_stub(boot_fs_uuid, prefix))
        stubs.append(stub)
    if not stubs:
        raise BootloaderError(f"the image's EFI payload {payload} has no grub{suffix}.efi")
    boot_dir = efi / "BOOT"
    boot_dir.mkdir(exist_ok=True)
    if _find_ci(boot_dir, f"BOOT{suffix}.EFI") is None:
        assert grub_binary is not None
        shutil.copyfile(shim or grub_binary, boot_dir / f"BOOT{suffix.upper()}.EFI")
        if shim is not None:
            shutil.copyfile(grub_binary, boot_dir / grub_binary.name)
    return stubs
