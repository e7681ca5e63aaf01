"""The stage records in the cache: written whole or not at all, and a damaged one is reported, removed and
treated as absent (the stage runs again) instead of breaking every later build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.stages.records import StageRecords

STAGE_ID = "ab" * 32
RECORD = {"repo": "/cache/repo", "commit": "cd" * 32, "image_ref": "ostree/container/image/x"}


def test_written_whole_and_read_back(tmp_path: Path) -> None:
    records = StageRecords(tmp_path)
    assert records.read(STAGE_ID) == (None, None)
    records.write(STAGE_ID, RECORD)
    assert records.read(STAGE_ID) == (RECORD, None)
    assert [p.name for p in (tmp_path / "stages").iterdir()] == [f"{STAGE_ID}.json"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (json.dumps(RECORD).encode()[:30], "is damaged (JSONDecodeError"),
        (b"", "is damaged (JSONDecodeError"),
        (b"\xff\xfe\x00", "is damaged (UnicodeDecodeError"),
        (b"[1, 2]", "holds no record (a JSON list)"),
        (b"null", "holds no record (a JSON NoneType)"),
    ],
    ids=["truncated", "empty", "binary", "list", "null"],
)
def test_damaged_record_is_reported_removed_and_absent(tmp_path: Path, content: bytes, why: str) -> None:
    records = StageRecords(tmp_path)
    path = tmp_path / "stages" / f"{STAGE_ID}.json"
    path.parent.mkdir()
    path.write_bytes(content)
    record, damaged = records.read(STAGE_ID)
    assert record is None and damaged is not None and why in damaged and "running the stage again" in damaged
    assert not path.exists()
    assert records.read(STAGE_ID) == (None, None)


def test_refuses_a_path_as_stage_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a stage id"):
        StageRecords(tmp_path).write("../../etc/passwd", RECORD)
