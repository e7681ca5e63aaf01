"""Filesystems made at a partition's offset in an image file, and the FAT ESP filled with mtools (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import run
from builder.disk import partition as pt
from builder.disk.esp import EspError, exists, populate_esp, read_file
from builder.disk.mkfs import FilesystemError, fat_uuid, fat_volume_id, make_filesystem

MIB = 1024 * 1024
UUID = "0b0e0b0e-1111-4222-8333-444455556666"


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Path, tuple[pt.Placed, ...]]:
    image = tmp_path / "disk.raw"
    specs = [
        pt.PartitionSpec("EFI-SYSTEM", pt.ESP, 100 * MIB, "11111111-2222-4333-8444-555555555502"),
        pt.PartitionSpec("boot", pt.XBOOTLDR, 64 * MIB, "11111111-2222-4333-8444-555555555503"),
        pt.PartitionSpec("root", pt.LINUX_DATA, None, "11111111-2222-4333-8444-555555555504"),
    ]
    placed = pt.create_gpt(image, 256 * MIB, specs, disk_guid="D15CD15C-0000-4000-8000-000000000001")
    return image, placed


def probe(image: Path, part: pt.Placed) -> dict[str, str]:
    out = run.run(["blkid", "-p", "-O", str(part.start), "-o", "export", image], check=False).out
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_fat_volume_id() -> None:
    assert fat_volume_id("7b77-95e7") == "7B7795E7"
    assert fat_volume_id("0e5f0e5f-1111-4222-8333-444455556666") == "0E5F0E5F"
    assert fat_uuid("0e5f0e5f-1111-4222-8333-444455556666") == "0E5F-0E5F"
    with pytest.raises(FilesystemError):
        fat_volume_id("nope")


def test_ext4_at_offset_is_clean_and_grub_readable(
    disk: tuple[Path, tuple[pt.Placed, ...]], tmp_path: Path
) -> None:
    image, (_esp, boot, root) = disk
    tree = tmp_path / "tree"
    (tree / "loader.1" / "entries").mkdir(parents=True)
    (tree / "loader.1" / "entries" / "a.conf").write_text("title a\n")
    (tree / "loader").symlink_to("loader.1")
    make_filesystem(image, boot, "ext4", uuid=UUID, label="boot", root_dir=tree)
    info = probe(image, boot)
    assert (info["TYPE"], info["UUID"], info["LABEL"]) == ("ext4", UUID, "boot")
    # The filesystem stays inside its partition: the neighbours are untouched.
    assert "TYPE" not in probe(image, root)
    # Extract the partition to check it with the real tools (e2fsck cannot take an offset).
    part_file = tmp_path / "boot.ext4"
    with open(image, "rb") as src, open(part_file, "wb") as dst:
        src.seek(boot.start)
        dst.write(src.read(boot.size))
    run.run(["e2fsck", "-fn", part_file])
    features = run.run(["dumpe2fs", "-h", part_file]).out
    for unreadable_by_grub_2_06 in ("metadata_csum_seed", "orphan_file"):
        assert unreadable_by_grub_2_06 not in features
    listing = run.run(["debugfs", "-R", "ls -l /loader.1/entries", part_file]).out
    assert "a.conf" in listing


def test_vfat_and_populate_esp(disk: tuple[Path, tuple[pt.Placed, ...]], tmp_path: Path) -> None:
    image, (esp, _boot, _root) = disk
    make_filesystem(image, esp, "vfat", uuid="7B77-95E7", label="EFI-SYSTEM")
    info = probe(image, esp)
    assert (info["TYPE"], info["UUID"], info["LABEL"], info["VERSION"]) == (
        "vfat",
        "7B77-95E7",
        "EFI-SYSTEM",
        "FAT16",  # 100 MiB is too small for a real FAT32,
    )
    tree = tmp_path / "esp"
    (tree / "EFI" / "BOOT").mkdir(parents=True)
    (tree / "EFI" / "fedora").mkdir()
    payload = bytes(range(256)) * 1000
    (tree / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(payload)
    (tree / "EFI" / "fedora" / "grub.cfg").write_text("configfile x\n")
    populate_esp(image, esp, tree)
    (tree / "EFI" / "fedora" / "grub.cfg").write_text("configfile y\n")
    populate_esp(image, esp, tree)  # a second run merges and overwrites
    assert read_file(image, esp, "EFI/BOOT/BOOTX64.EFI") == payload
    assert read_file(image, esp, "EFI/fedora/grub.cfg") == b"configfile y\n"
    assert exists(image, esp, "EFI/fedora")
    assert not exists(image, esp, "EFI/debian")
    # The FAT's hidden-sectors field holds the partition's start, as firmware expects.
    with open(image, "rb") as f:
        f.seek(esp.start + 0x1C)
        assert int.from_bytes(f.read(4), "little") == esp.start // 512


def test_esp_tree_with_a_symlink_is_refused(disk: tuple[Path, tuple[pt.Placed, ...]], tmp_path: Path) -> None:
    image, (esp, _boot, _root) = disk
    make_filesystem(image, esp, "vfat", uuid="7B77-95E7", label="EFI-SYSTEM")
    tree = tmp_path / "esp"
    tree.mkdir()
    (tree / "link").symlink_to("/etc/passwd")
    with pytest.raises(EspError, match="not a regular file"):
        populate_esp(image, esp, tree)


@pytest.mark.parametrize(
    ("fstype", "label", "message"),
    [("ntfs", "x", "unsupported"), ("vfat", "ABCDEFGHIJKL", "longer"), ("xfs", "thirteen-char", "longer")],
)
def test_make_filesystem_rejects(
    disk: tuple[Path, tuple[pt.Placed, ...]], fstype: str, label: str, message: str
) -> None:
    image, (_esp, boot, _root) = disk
    with pytest.raises(FilesystemError, match=message):
        make_filesystem(image, boot, fstype, uuid=UUID, label=label)


@pytest.mark.parametrize(
    ("esp_mib", "version"), [(501, "FAT32"), (100, "FAT16"), (20, "FAT16"), (8, "FAT12")]
)
def test_fat_type_follows_the_partition_not_the_file(tmp_path: Path, esp_mib: int, version: str) -> None:
    image = tmp_path / "disk.raw"
    specs = [
        pt.PartitionSpec("EFI-SYSTEM", pt.ESP, esp_mib * MIB, "11111111-2222-4333-8444-555555555502"),
        pt.PartitionSpec("root", pt.LINUX_DATA, None, "11111111-2222-4333-8444-555555555504"),
    ]
    esp, _root = pt.create_gpt(image, 2048 * MIB, specs, disk_guid="D15CD15C-0000-4000-8000-000000000001")
    make_filesystem(image, esp, "vfat", uuid="7B77-95E7", label="EFI-SYSTEM")
    assert probe(image, esp)["VERSION"] == version
    tree = tmp_path / "tree"
    (tree / "EFI" / "BOOT").mkdir(parents=True)
    (tree / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ" * 1000)
    populate_esp(image, esp, tree)  # mtools reads the FAT type as mkfs.fat wrote it
    assert read_file(image, esp, "EFI/BOOT/BOOTX64.EFI") == b"MZ" * 1000
