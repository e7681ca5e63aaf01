"""The ESP tree: GRUB EFI built here, or the image's own shim+GRUB payload with a grub.cfg stub."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.arch import Arch
from builder.bootloader import BootloaderError
from builder.bootloader.grub_efi import (
    build_esp_tree,
    esp_tree_from_payload,
    find_image_efi_payload,
    removable_path,
)

X86_EFI = Path("/usr/lib/grub/x86_64-efi")


def fedora_payload(root: Path, rel: str = "usr/lib/bootupd/updates/EFI") -> Path:
    efi = root / rel
    (efi / "fedora").mkdir(parents=True)
    (efi / "BOOT").mkdir()
    for name in ("shimx64.efi", "grubx64.efi", "mmx64.efi", "BOOTX64.CSV"):
        (efi / "fedora" / name).write_bytes(name.encode())
    (efi / "BOOT" / "BOOTX64.EFI").write_bytes(b"shimx64.efi")
    (efi / "BOOT" / "fbx64.efi").write_bytes(b"fallback")
    return efi


def test_build_esp_tree_makes_a_pe_binary_at_the_removable_path(tmp_path: Path) -> None:
    output = build_esp_tree(tmp_path, Arch.X86_64, grub_dir=X86_EFI, boot_fs_uuid="0b0e", boot_fs="xfs")
    assert output == tmp_path / "EFI" / "BOOT" / "BOOTX64.EFI"
    assert output.read_bytes()[:2] == b"MZ"
    assert removable_path(Arch.AARCH64) == "EFI/BOOT/BOOTAA64.EFI"


def test_find_image_efi_payload(tmp_path: Path) -> None:
    assert find_image_efi_payload(tmp_path, Arch.X86_64) is None
    efi = fedora_payload(tmp_path, "usr/lib/ostree-boot/efi/EFI")
    assert find_image_efi_payload(tmp_path, Arch.X86_64) == efi
    assert find_image_efi_payload(tmp_path, Arch.AARCH64) is None  # x64 binaries only
    newer = fedora_payload(tmp_path)
    assert find_image_efi_payload(tmp_path, Arch.X86_64) == newer


def test_a_payload_link_out_of_the_image_is_ignored(tmp_path: Path) -> None:
    outside = fedora_payload(tmp_path / "elsewhere", "EFI")
    root = tmp_path / "root"
    (root / "usr/lib/bootupd/updates").mkdir(parents=True)
    (root / "usr/lib/bootupd/updates/EFI").symlink_to(outside)
    assert find_image_efi_payload(root, Arch.X86_64) is None


def test_esp_tree_from_payload_keeps_it_and_adds_the_stub(tmp_path: Path) -> None:
    efi = fedora_payload(tmp_path / "image")
    tree = tmp_path / "esp"
    stubs = esp_tree_from_payload(efi, tree, Arch.X86_64, boot_fs_uuid="0b0e-1111")
    assert stubs == [tree / "EFI" / "fedora" / "grub.cfg"]
    stub = stubs[0].read_text()
    assert "search --no-floppy --fs-uuid --set=dev 0b0e-1111" in stub
    assert "configfile $prefix/grub.cfg" in stub and "set prefix=($dev)/grub2" in stub
    assert (tree / "EFI" / "BOOT" / "fbx64.efi").read_bytes() == b"fallback"
    assert (tree / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes() == b"shimx64.efi"


def test_payload_without_removable_path_gets_shim_and_grub_there(tmp_path: Path) -> None:
    efi = fedora_payload(tmp_path / "image")
    for f in (efi / "BOOT").iterdir():
        f.unlink()
    (efi / "BOOT").rmdir()
    tree = tmp_path / "esp"
    esp_tree_from_payload(efi, tree, Arch.X86_64, boot_fs_uuid="0b0e")
    assert (tree / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes() == b"shimx64.efi"
    assert (tree / "EFI" / "BOOT" / "grubx64.efi").read_bytes() == b"grubx64.efi"


def test_payload_without_grub_is_refused(tmp_path: Path) -> None:
    efi = tmp_path / "EFI" / "vendor"
    efi.mkdir(parents=True)
    (efi / "other.efi").write_bytes(b"x")
    with pytest.raises(BootloaderError, match=r"no grubx64\.efi"):
        esp_tree_from_payload(efi.parent, tmp_path / "esp", Arch.X86_64, boot_fs_uuid="0b0e")
