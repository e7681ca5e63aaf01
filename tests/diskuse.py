"""The test session's disk use: its peak, and the temporary directories of passed tests removed as they end.

The whole suite writes tens of GB (every build's disk images); kept until the session ends they once filled
the disk. A passed test's `tmp_path` is removed right after the test (a failed one is kept to look at), unless
something is still mounted or attached as a loop device below it: then it is left alone and reported, since
removing through a leaked mount would delete what is mounted there.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder import run
from tests.imagebuilds import leaked_resources

GIB = 1 << 30
SAMPLE_SECONDS = 20.0


def tree_bytes(path: Path) -> int:
    """Bytes allocated below `path` (du: sparse files count what they hold), not crossing into mounts."""
    if not path.exists():
        return 0
    result = run.run(["du", "-sx", "--block-size=1", path], check=False)
    # du exits 1 when a file vanished while it looked (a test removing its own files): the total is still
    # the best figure there is.
    return int(result.out.split()[0]) if result.out.strip() else 0


def filesystem_used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@dataclass
class PeakSampler:
    """Samples the size of `root` (the session's basetemp) and the use of its filesystem every few seconds
    in a thread; `peak` and `fs_peak` (over the start) are the largest seen."""

    root: Path
    interval: float = SAMPLE_SECONDS
    peak: int = 0
    peak_at: float = 0.0
    fs_start: int = 0
    fs_peak: int = 0
    kept: list[str] = field(default_factory=list)  # tmp_paths not removed, and why
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self.fs_start = self.fs_peak = filesystem_used(self.root)
        self._thread = threading.Thread(target=self._run, name="disk-peak", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        size = tree_bytes(self.root)
        if size > self.peak:
            self.peak, self.peak_at = size, time.monotonic() - self._started
        self.fs_peak = max(self.fs_peak, filesystem_used(self.root))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def summary(self) -> list[str]:
        grown = self.fs_peak - self.fs_start
        lines = [
            f"peak size of the pytest temporary directory {self.root}: {self.peak / GIB:.1f} GiB "
            f"(du, sampled every {self.interval:.0f} s, at {self.peak_at / 60:.0f} min); now "
            f"{tree_bytes(self.root) / GIB:.1f} GiB",
            f"peak use of its filesystem over the session's start: {grown / GIB:+.1f} GiB (statvfs; counts "
            "every process on the machine)",
        ]
        lines += [f"kept: {why}" for why in self.kept]
        return lines


def remove_passed_tmp(path: Path, sampler: PeakSampler | None) -> None:
    """Remove a passed test's tmp_path, unless a mount or loop device below it is still in use."""
    leaks = leaked_resources(path)
    if leaks:
        if sampler is not None:
            sampler.kept.append(f"{path}: {', '.join(leaks)}")
        return

    def failed(_func: object, name: str, exc: tuple[type[BaseException], BaseException, object]) -> None:
        if sampler is not None:
            sampler.kept.append(f"{name}: could not be removed: {exc[1]}")

    shutil.rmtree(path, onerror=failed)
