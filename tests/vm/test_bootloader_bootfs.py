"""GRUB (BIOS) reads /boot on xfs and btrfs as builder.disk.mkfs makes them (bookworm's xfsprogs 6.1 and
btrfs-progs 6.2 defaults), not only ext4."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

import pytest

from builder.arch import Arch
from builder.bootloader.grub_bios import install_grub_bios
from builder.bootloader.grub_cfg import parse_bls_entries, write_grub_cfg
from builder.devices import loop_device, mounted
from builder.disk import partition as pt
from builder.disk.mkfs import make_filesystem
from builder.vm import BootResult, Firmware, boot
from tests.bootpool import GUEST_SMP, Outcomes, boot_all
from tests.vm.test_bootloader import BOOTED, HOST_GRUB, busybox_initramfs, debian_kernel, make_boot_tree

MIB = 1024 * 1024
# One UUID per disk: both disks are attached at once, and mkfs.btrfs refuses a UUID another device has.
BOOT_FS_UUIDS = {
    "xfs": "0b0ef500-1111-4222-8333-444455556666",
    "btrfs": "0b0ef501-1111-4222-8333-444455556666",
}
BOOT_FILESYSTEMS = tuple(BOOT_FS_UUIDS)


def _make_and_boot(boot_fs: str, kernel: Path) -> BootResult:
    uuid = BOOT_FS_UUIDS[boot_fs]
    with tempfile.TemporaryDirectory(prefix="imgbuild-test-bootfs-") as tmp:
        image = Path(tmp) / "disk.raw"
        specs = [
            pt.PartitionSpec(
                "BIOS-BOOT", pt.BIOS_BOOT, MIB, "0b105b00-1111-4222-8333-444455556666", bootable=True
            ),
            pt.PartitionSpec("boot", pt.XBOOTLDR, 300 * MIB, "0b0070b0-1111-4222-8333-444455556666"),
        ]
        bios, boot_part = pt.create_gpt(
            image, 320 * MIB, specs, disk_guid="d15cd15c-1111-4222-8333-444455556666"
        )
        tree = Path(tmp) / "boot"
        make_boot_tree(tree, kernel, busybox_initramfs(Path("/bin/busybox")), "console=ttyS0 quiet")
        write_grub_cfg(tree, entries=parse_bls_entries(tree), use_blscfg=False, boot_fs_uuid=uuid)
        make_filesystem(image, boot_part, boot_fs, uuid=uuid, label="boot")
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        with loop_device(image, offset=boot_part.start, size=boot_part.size) as dev, mounted(dev, mnt):
            shutil.copytree(tree, mnt, symlinks=True, dirs_exist_ok=True)
        install_grub_bios(
            image,
            bios_boot=bios,
            boot_part=boot_part,
            boot_fs_uuid=uuid,
            grub_dir=HOST_GRUB / "i386-pc",
            boot_fs=boot_fs,
        )
        return boot(
            image, arch=Arch.X86_64, firmware=Firmware.BIOS, timeout=240, marker=BOOTED, smp=GUEST_SMP
        )


@pytest.fixture(scope="module")
def booted() -> Outcomes[str, BootResult]:
    """Both disks made and booted, two at a time (tests/bootpool.py)."""
    kernel = debian_kernel(Arch.X86_64)  # downloaded once, before the jobs share it
    return boot_all({fs: partial(_make_and_boot, fs, kernel) for fs in BOOT_FILESYSTEMS})


@pytest.mark.parametrize("boot_fs", BOOT_FILESYSTEMS)
def test_bios_boot_from_boot_fs(boot_fs: str, booted: Outcomes[str, BootResult]) -> None:
    result = booted.outcome(boot_fs)
    assert result.marker_line is not None and "console=ttyS0 quiet ostree=" in result.marker_line
