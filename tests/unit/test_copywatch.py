"""CopyWatch counts what a copy writes into an OCI layout: temporary blobs and new blobs, not old ones."""

from __future__ import annotations

from pathlib import Path

from builder.source.copywatch import CopyWatch


def test_counts_new_and_partial_blobs_only(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / "old").write_bytes(b"o" * 100)  # in the cache before: reused, not fetched
    reports: list[tuple[int, int]] = []
    with CopyWatch(tmp_path, 80, lambda done, total: reports.append((done, total)), interval=60) as watch:
        assert watch.written() == 0
        (tmp_path / "oci-put-blob123").write_bytes(b"p" * 30)  # being written
        assert watch.written() == 30
        (tmp_path / "oci-put-blob123").rename(blobs / "new")  # complete
        (tmp_path / "oci-put-blob456").write_bytes(b"q" * 20)
        assert watch.written() == 50
        (tmp_path / "oci-put-blob456").rename(blobs / "new2")
    assert reports[0] == (0, 80)  # the first report starts the clock
    assert reports[-1] == (50, 80)


def test_last_report_is_complete_when_the_total_was_not_known(tmp_path: Path) -> None:
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    reports: list[tuple[int, int]] = []
    with CopyWatch(tmp_path, 0, lambda done, total: reports.append((done, total)), interval=60):
        (tmp_path / "blobs" / "sha256" / "x").write_bytes(b"x" * 7)
    assert reports == [(0, 0), (7, 7)]
