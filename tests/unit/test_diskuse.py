"""tests/diskuse.py: the session's disk peak and the removal of passed tests' temporary directories."""

from __future__ import annotations

from pathlib import Path

from tests.diskuse import PeakSampler, remove_passed_tmp, tree_bytes

MIB = 1 << 20


def test_tree_bytes_counts_allocated_bytes_not_holes(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"x" * 4 * MIB)
    with open(tmp_path / "sparse", "wb") as f:
        f.truncate(512 * MIB)
    assert 4 * MIB <= tree_bytes(tmp_path) < 5 * MIB
    assert tree_bytes(tmp_path / "missing") == 0


def test_sampler_keeps_the_peak_after_files_go(tmp_path: Path) -> None:
    sampler = PeakSampler(tmp_path, interval=3600)
    sampler.start()
    big = tmp_path / "big"
    big.write_bytes(b"x" * 8 * MIB)
    sampler.sample()
    big.unlink()
    sampler.stop()  # samples once more: the tree is empty now
    assert sampler.peak >= 8 * MIB
    summary = sampler.summary()
    assert summary[0].startswith(f"peak size of the pytest temporary directory {tmp_path}: 0.0 GiB")
    assert "now 0.0 GiB" in summary[0]


def test_remove_passed_tmp(tmp_path: Path) -> None:
    work = tmp_path / "test_x0"
    (work / "a" / "b").mkdir(parents=True)
    (work / "a" / "b" / "f").write_text("x")
    sampler = PeakSampler(tmp_path)
    remove_passed_tmp(work, sampler)
    assert not work.exists() and sampler.kept == []
