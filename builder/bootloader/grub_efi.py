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
from builder.bootloader.efi_chain import esp_config_dir, grub_image

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


def fallback_csv(shim_name: str, vendor: str) -> bytes:
    """shim's fallback entry file (EFI/<vendor>/BOOT<ARCH>.CSV, UTF-16 with a BOM): fbx64.efi reads it
    and creates the boot entry `vendor` -> `shim_name` in that directory, then boots it."""
    line = f"{shim_name},{vendor},,This is the boot entry for {vendor}\n"
    return b"\xff\xfe" + line.encode("utf-16-le")


def esp_tree_from_payload(
    payload: Path, tree: Path, arch: Arch, *, boot_fs_uuid: str, prefix: str = "/grub2"
) -> list[Path]:
    """Copy the image's EFI payload to `tree/EFI` and add the grub.cfg stubs; returns the stubs written.

    - A stub goes into every vendor directory with a GRUB, and into the directory the GRUB binary itself
      names as its prefix (read from the binary: Debian's signed GRUB has `/EFI/debian` built in, and under
      Secure Boot it can read nothing else, nor load a module).
    - Without `EFI/BOOT/BOOT<ARCH>.EFI`, the vendor's shim (or GRUB) goes there, with GRUB beside it, since
      shim loads GRUB from its own directory. A `BOOT<ARCH>.EFI` that has neither GRUB nor shim's fallback
      beside it gets GRUB too.
    - With shim's fallback (`EFI/BOOT/fb<arch>.efi`), the vendor directory holding shim needs a
      `BOOT<ARCH>.CSV` naming it: the fallback turns it into the boot entry on first boot (a disk image
      has no NVRAM to write one into). One is written when the payload lacks it.
    """
    suffix = EFI_SUFFIX[arch]
    efi = tree / "EFI"
    for src in payload.rglob("*"):
        if src.is_symlink():
            raise BootloaderError(f"the image's EFI payload has a symlink {src.relative_to(payload)}")
    shutil.copytree(payload, efi, dirs_exist_ok=True)
    stub_dirs: list[Path] = []
    grub_binary: Path | None = None
    shim: Path | None = None
    for vendor in sorted(p for p in efi.iterdir() if p.is_dir() and p.name.upper() != "BOOT"):
        grub = _find_ci(vendor, f"grub{suffix}.efi")
        if grub is None:
            continue
        grub_binary = grub_binary or grub
        vendor_shim = _find_ci(vendor, f"shim{suffix}.efi")
        shim = shim or vendor_shim
        stub_dirs.append(vendor)
        has_fallback = (efi / "BOOT").is_dir() and _find_ci(efi / "BOOT", f"fb{suffix}.efi") is not None
        if vendor_shim is not None and has_fallback and _find_ci(vendor, f"BOOT{suffix}.CSV") is None:
            csv = fallback_csv(vendor_shim.name, vendor.name)
            (vendor / f"BOOT{suffix.upper()}.CSV").write_bytes(csv)
    if grub_binary is None:
        raise BootloaderError(f"the image's EFI payload {payload} has no grub{suffix}.efi")
    built_in = grub_image(grub_binary.read_bytes())
    config_dir = esp_config_dir(built_in.prefix if built_in else None)
    if config_dir is not None:
        parts = config_dir.split("/")
        if parts[0].upper() == "EFI" and len(parts) > 1 and ".." not in parts:
            target = efi.joinpath(*parts[1:])
            if all(target.resolve() != d.resolve() for d in stub_dirs):
                target.mkdir(parents=True, exist_ok=True)
                stub_dirs.append(target)
    stubs = []
    for directory in stub_dirs:
        stub = directory / "grub.cfg"
        stub.write_text(grub_cfg_stub(boot_fs_uuid, prefix))
        stubs.append(stub)
    boot_dir = efi / "BOOT"
    boot_dir.mkdir(exist_ok=True)
    if _find_ci(boot_dir, f"BOOT{suffix}.EFI") is None:
        shutil.copyfile(shim or grub_binary, boot_dir / f"BOOT{suffix.upper()}.EFI")
        if shim is not None:
            shutil.copyfile(grub_binary, boot_dir / grub_binary.name)
    elif _find_ci(boot_dir, f"grub{suffix}.efi") is None and _find_ci(boot_dir, f"fb{suffix}.efi") is None:
        shutil.copyfile(grub_binary, boot_dir / grub_binary.name)
    return stubs
