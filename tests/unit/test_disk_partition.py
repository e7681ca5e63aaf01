"""GPT layout and creation with pyparted + sgdisk on a sparse file (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import run
from builder.disk import partition as pt

MIB = 1024 * 1024
GIB = 1024 * MIB


def bib_x86_64() -> list[pt.PartitionSpec]:
    return [
        pt.PartitionSpec(
            "BIOS-BOOT", pt.BIOS_BOOT, MIB, "11111111-2222-4333-8444-555555555501", bootable=True
        ),
        pt.PartitionSpec("EFI-SYSTEM", pt.ESP, 501 * MIB, "11111111-2222-4333-8444-555555555502"),
        pt.PartitionSpec("boot", pt.XBOOTLDR, GIB, "11111111-2222-4333-8444-555555555503"),
        pt.PartitionSpec("root", pt.ROOT_X86_64, None, "11111111-2222-4333-8444-555555555504"),
    ]


def test_layout_is_mib_aligned_and_fills_the_disk() -> None:
    placed = pt.layout(10 * GIB, bib_x86_64())
    assert [p.number for p in placed] == [1, 2, 3, 4]
    assert [p.start for p in placed] == [MIB, 2 * MIB, 503 * MIB, 1527 * MIB]
    assert all(p.start % MIB == 0 and p.size % MIB == 0 for p in placed)
    # The root partition ends on the last whole MiB before the backup GPT.
    assert placed[-1].end == 10 * GIB - MIB


def test_layout_rounds_sizes_up_to_mib() -> None:
    spec = pt.PartitionSpec("x", pt.LINUX_DATA, 1000, "11111111-2222-4333-8444-555555555501")
    (placed,) = pt.layout(16 * MIB, [spec])
    assert placed.size == MIB


@pytest.mark.parametrize(
    ("size", "specs", "message"),
    [
        (
            8 * MIB,
            [pt.PartitionSpec("big", pt.LINUX_DATA, 8 * MIB, "11111111-2222-4333-8444-555555555501")],
            "does not fit",
        ),
        (
            64 * MIB,
            [
                pt.PartitionSpec("a", pt.LINUX_DATA, None, "11111111-2222-4333-8444-555555555501"),
                pt.PartitionSpec("b", pt.LINUX_DATA, MIB, "11111111-2222-4333-8444-555555555502"),
            ],
            "only the last",
        ),
        (64 * MIB, [], "at least one"),
        (
            64 * MIB + 1,
            [pt.PartitionSpec("a", pt.LINUX_DATA, None, "11111111-2222-4333-8444-555555555501")],
            "multiple of 512",
        ),
    ],
)
def test_layout_rejects(size: int, specs: list[pt.PartitionSpec], message: str) -> None:
    with pytest.raises(pt.PartitionError, match=message):
        pt.layout(size, specs)


def sgdisk_info(image: Path, number: int) -> str:
    return run.run(["sgdisk", "--info", str(number), image]).out


def test_create_gpt_sets_everything_deterministically(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    disk_guid = "D15CD15C-0000-4000-8000-000000000001"
    placed = pt.create_gpt(image, 4 * GIB, bib_x86_64(), disk_guid=disk_guid)
    assert image.stat().st_size == 4 * GIB
    assert image.stat().st_blocks * 512 < 4 * MIB  # sparse
    out = run.run(["sgdisk", "--print", image]).out
    assert f"Disk identifier (GUID): {disk_guid}" in out
    for p in placed:
        info = sgdisk_info(image, p.number)
        assert f"Partition GUID code: {p.spec.type_guid}" in info
        assert f"Partition unique GUID: {p.spec.uuid.upper()}" in info
        assert f"First sector: {p.start // 512} " in info
        assert f"Partition size: {p.size // 512} sectors" in info
        assert f"Partition name: '{p.spec.name}'" in info
        assert ("Attribute flags: 0000000000000004" in info) == p.spec.bootable
    pt.verify_gpt(image)
    # Same inputs, same bytes.
    again = tmp_path / "again.raw"
    pt.create_gpt(again, 4 * GIB, bib_x86_64(), disk_guid=disk_guid)
    with open(image, "rb") as a, open(again, "rb") as b:
        assert a.read(MIB) == b.read(MIB)
        a.seek(-MIB, 2)
        b.seek(-MIB, 2)
        assert a.read() == b.read()


def test_create_gpt_rejects_a_bad_guid_and_leaves_no_file(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    specs = [pt.PartitionSpec("root", pt.LINUX_DATA, None, "not-a-guid")]
    with pytest.raises(pt.PartitionError, match="not a GUID"):
        pt.create_gpt(image, 64 * MIB, specs, disk_guid="D15CD15C-0000-4000-8000-000000000001")
    assert not image.exists()


def test_aarch64_layout_has_no_bios_boot(tmp_path: Path) -> None:
    specs = [
        pt.PartitionSpec("EFI-SYSTEM", pt.ESP, 501 * MIB, "11111111-2222-4333-8444-555555555502"),
        pt.PartitionSpec("boot", pt.XBOOTLDR, GIB, "11111111-2222-4333-8444-555555555503"),
        pt.PartitionSpec("root", pt.ROOT_AARCH64, None, "11111111-2222-4333-8444-555555555504"),
    ]
    image = tmp_path / "disk.raw"
    placed = pt.create_gpt(image, 3 * GIB, specs, disk_guid="D15CD15C-0000-4000-8000-000000000002")
    assert placed[0].number == 1 and placed[0].spec.type_guid == pt.ESP
    assert f"Partition GUID code: {pt.ROOT_AARCH64}" in sgdisk_info(image, 3)
