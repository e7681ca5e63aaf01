"""The GPT fields written without sgdisk (builder/disk/gptfields.py), read back by sfdisk (util-linux, another
GPT implementation than the sgdisk check create_gpt runs) from both copies of the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder import run
from builder.disk import gptfields
from builder.disk import partition as pt

MIB = 1 << 20


def _table(image: Path) -> dict[str, object]:
    table: dict[str, object] = json.loads(run.run(["sfdisk", "--json", image]).out)["partitiontable"]
    return table


def _specs() -> list[pt.PartitionSpec]:
    return [
        pt.PartitionSpec("bios", pt.BIOS_BOOT, MIB, "11111111-2222-4333-8444-555555555501", bootable=True),
        pt.PartitionSpec("root", pt.ROOT_X86_64, None, "11111111-2222-4333-8444-555555555502"),
    ]


def test_both_copies_carry_the_fields(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    pt.create_gpt(image, 64 * MIB, _specs(), disk_guid="D15CD15C-0000-4000-8000-0000000000AA")
    primary = _table(image)
    # Wipe the primary header: sfdisk then reads the backup copy (and says so on stderr).
    with open(image, "r+b") as f:
        f.seek(512)
        f.write(bytes(512))
    backup = _table(image)
    for table in (primary, backup):
        assert table["id"] == "D15CD15C-0000-4000-8000-0000000000AA"
        parts = table["partitions"]
        assert isinstance(parts, list)
        assert [p["type"] for p in parts] == [pt.BIOS_BOOT, pt.ROOT_X86_64]
        assert [p["uuid"] for p in parts] == [s.uuid.upper() for s in _specs()]
        assert parts[0].get("attrs") == "LegacyBIOSBootable" and "attrs" not in parts[1]
        assert [p["name"] for p in parts] == ["bios", "root"]


def test_a_damaged_table_is_refused_and_left_alone(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    pt.create_gpt(image, 64 * MIB, _specs(), disk_guid="D15CD15C-0000-4000-8000-0000000000AB")
    with open(image, "r+b") as f:
        f.seek(1024 + 100)  # inside the first entry's name: the entry array's CRC no longer matches
        f.write(b"\xff")
    before = image.read_bytes()
    fields = {1: gptfields.EntryFields(pt.LINUX_DATA, "11111111-2222-4333-8444-555555555509")}
    with pytest.raises(gptfields.GptError, match=r"entry array .* fails its CRC"):
        gptfields.set_fields(image, "D15CD15C-0000-4000-8000-0000000000AC", fields)
    assert image.read_bytes() == before
    pt.create_gpt(image, 64 * MIB, _specs(), disk_guid="D15CD15C-0000-4000-8000-0000000000AB")
    with pytest.raises(gptfields.GptError, match="partition 3 is not in the GPT"):
        gptfields.set_fields(image, "D15CD15C-0000-4000-8000-0000000000AC", {3: fields[1]})
