"""boot.img and core.img written and patched as grub-bios-setup would, on a real GPT disk file."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from builder.bootloader import BootloaderError, early_config, grub_mkimage, modules_for
from builder.bootloader.grub_bios import install_grub_bios, write_bios_boot
from builder.disk import partition as pt

MIB = 1024 * 1024
I386 = Path("/usr/lib/grub/i386-pc")


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Path, tuple[pt.Placed, ...]]:
    image = tmp_path / "disk.raw"
    specs = [
        pt.PartitionSpec(
            "BIOS-BOOT", pt.BIOS_BOOT, MIB, "11111111-2222-4333-8444-555555555501", bootable=True
        ),
        pt.PartitionSpec("boot", pt.XBOOTLDR, 32 * MIB, "11111111-2222-4333-8444-555555555503"),
    ]
    return image, pt.create_gpt(image, 64 * MIB, specs, disk_guid="D15CD15C-0000-4000-8000-000000000001")


def test_install_grub_bios_patches_mbr_and_core(disk: tuple[Path, tuple[pt.Placed, ...]]) -> None:
    image, (bios, boot) = disk
    with open(image, "rb") as f:
        mbr_before = f.read(512)
    install_grub_bios(
        image, bios_boot=bios, boot_part=boot, boot_fs_uuid="0b0e-uuid", grub_dir=I386, boot_fs="ext4"
    )
    pt.verify_gpt(image)  # the protective MBR and the GPT survived
    boot_img = (I386 / "boot.img").read_bytes()
    with open(image, "rb") as f:
        mbr = f.read(512)
        f.seek(bios.start)
        core = f.read(bios.size)
    assert mbr[440:] == mbr_before[440:]
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == bios.start // 512
    assert mbr[0x66:0x68] == b"\x90\x90"
    # Apart from the patched fields, the MBR code is boot.img's.
    assert mbr[:0x5C] == boot_img[:0x5C] and mbr[0x68:440] == boot_img[0x68:440]
    start, length, segment = struct.unpack_from("<QHH", core, 500)
    assert start == bios.start // 512 + 1
    assert segment == 0x820
    end_of_core = (length + 1) * 512
    assert core[end_of_core:] == bytes(len(core) - end_of_core)  # nothing beyond core.img's sectors


def test_core_img_too_large_is_refused(disk: tuple[Path, tuple[pt.Placed, ...]]) -> None:
    image, (bios, _boot) = disk
    with pytest.raises(BootloaderError, match="does not fit"):
        write_bios_boot(image, bios_boot=bios, boot_img=bytes(512), core_img=bytes(bios.size + 1))


def test_a_disk_without_protective_mbr_is_refused(
    tmp_path: Path, disk: tuple[Path, tuple[pt.Placed, ...]]
) -> None:
    _image, (bios, _boot) = disk
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(4 * MIB))
    core = tmp_path / "core.img"
    grub_mkimage(
        platform="i386-pc",
        grub_dir=I386,
        output=core,
        modules=modules_for(I386, "ext4", ["biosdisk"]),
        config=early_config("x", "/grub2", None),
        prefix="/grub2",
    )
    with pytest.raises(BootloaderError, match="protective MBR"):
        write_bios_boot(
            blank, bios_boot=bios, boot_img=(I386 / "boot.img").read_bytes(), core_img=core.read_bytes()
        )


def test_modules_for_checks_the_directory(tmp_path: Path) -> None:
    with pytest.raises(BootloaderError, match="not a GRUB module directory"):
        modules_for(tmp_path, "ext4", [])
    with pytest.raises(BootloaderError, match="cannot boot from"):
        modules_for(I386, "ntfs", [])
    modules = modules_for(I386, "xfs", ["biosdisk"])
    assert modules[0] == "biosdisk" and "xfs" in modules and "normal" in modules and "blscfg" not in modules


def test_early_config_finds_boot_by_uuid() -> None:
    text = early_config("ab12", "/grub2", "(hd0,gpt3)")
    assert text.splitlines() == [
        "set root=(hd0,gpt3)",
        "search --no-floppy --fs-uuid --set=root ab12",
        "set prefix=($root)/grub2",
    ]
