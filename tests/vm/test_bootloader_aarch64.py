"""GRUB arm64-efi boots under AAVMF: the aarch64 layout (no BIOS boot partition, DPS aarch64 root type).

Debian's arm64 kernel, busybox and GRUB modules come from the archive as a foreign architecture
(`dpkg --add-architecture arm64`); qemu-system-aarch64 -M virt runs under TCG.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.arch import Arch
from builder.bootloader.grub_cfg import parse_bls_entries, write_grub_cfg
from builder.bootloader.grub_efi import build_esp_tree
from builder.disk import partition as pt
from builder.disk.esp import populate_esp, read_file
from builder.disk.mkfs import make_filesystem
from builder.vm import Firmware, boot
from tests.vm.test_bootloader import (
    BOOTED,
    SELFTEST,
    busybox_initramfs,
    debian_kernel,
    debian_package,
    make_boot_tree,
)

MIB = 1024 * 1024
BOOT_FS_UUID = "0b0eaa64-1111-4222-8333-444455556666"
ROOT_FS_UUID = "2007aa64-1111-4222-8333-444455556666"


@pytest.fixture(scope="module")
def arm64_disk() -> Iterator[Path]:
    kernel = debian_kernel(Arch.AARCH64)
    busybox = debian_package("busybox-static", Arch.AARCH64) / "bin" / "busybox"
    grub_dir = debian_package("grub-efi-arm64-bin", Arch.AARCH64) / "usr" / "lib" / "grub" / "arm64-efi"
    with tempfile.TemporaryDirectory(prefix="imgbuild-test-arm64disk-") as tmp:
        image = Path(tmp) / "disk.raw"
        specs = [
            pt.PartitionSpec("EFI-SYSTEM", pt.ESP, 100 * MIB, "0e5faa64-1111-4222-8333-444455556666"),
            pt.PartitionSpec("boot", pt.XBOOTLDR, 200 * MIB, "0b00aa64-1111-4222-8333-444455556666"),
            pt.PartitionSpec("root", pt.ROOT_AARCH64, None, "2007bb64-1111-4222-8333-444455556666"),
        ]
        esp, boot_part, root = pt.create_gpt(
            image, 400 * MIB, specs, disk_guid="d15caa64-1111-4222-8333-444455556666"
        )
        boot_tree = Path(tmp) / "boot"
        options = f"root=UUID={ROOT_FS_UUID} rw console=ttyAMA0 quiet"
        make_boot_tree(boot_tree, kernel, busybox_initramfs(busybox), options)
        write_grub_cfg(
            boot_tree, entries=parse_bls_entries(boot_tree), use_blscfg=False, boot_fs_uuid=BOOT_FS_UUID
        )
        make_filesystem(image, boot_part, "ext4", uuid=BOOT_FS_UUID, label="boot", root_dir=boot_tree)
        make_filesystem(image, root, "ext4", uuid=ROOT_FS_UUID, label="root")
        make_filesystem(image, esp, "vfat", uuid="7B77-AA64", label="EFI-SYSTEM")
        esp_tree = Path(tmp) / "esp"
        build_esp_tree(esp_tree, Arch.AARCH64, grub_dir=grub_dir, boot_fs_uuid=BOOT_FS_UUID, boot_fs="ext4")
        populate_esp(image, esp, esp_tree)
        assert read_file(image, esp, "EFI/BOOT/BOOTAA64.EFI")[:2] == b"MZ"
        yield image


def test_aarch64_uefi_boot(arm64_disk: Path) -> None:
    console = io.StringIO()
    result = boot(
        arm64_disk, arch=Arch.AARCH64, firmware=Firmware.UEFI, timeout=400, marker=BOOTED, console=console
    )
    assert "GNU GRUB" in console.getvalue() and "error:" not in console.getvalue()  # grub.cfg ran cleanly
    assert result.marker_line is not None
    assert f"root=UUID={ROOT_FS_UUID} rw console=ttyAMA0 quiet" in result.marker_line
    assert SELFTEST not in result.console_tail
