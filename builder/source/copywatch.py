"""The bytes a `skopeo copy` has written into the blob cache so far, reported while it runs.

skopeo says nothing useful on a pipe, but it writes each blob into the OCI layout as a temporary file
(`oci-put-blob*` in the layout's root) renamed to `blobs/sha256/<hex>` once complete: the sizes of those
files, minus the blobs already there, are the bytes fetched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

OnBytes = Callable[[int, int], None]  # (bytes fetched so far, bytes to fetch; 0 when not known)


class CopyWatch:
    def __init__(self, layout: Path, total: int, report: OnBytes, interval: float = 0.5) -> None:
        self.layout = layout
        self.total = total
        self.report = report
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="copy-watch", daemon=True)
        self._before: set[str] = set()

    def _blobs(self) -> Path:
        return self.layout / "blobs" / "sha256"

    def written(self) -> int:
        done = 0
        for pattern, directory in (("oci-put-blob*", self.layout), ("*", self._blobs())):
            for path in directory.glob(pattern):
                if directory is self.layout or path.name not in self._before:
                    try:
                        done += path.lstat().st_size
                    except FileNotFoundError:  # renamed meanwhile: counted at its new name next time
                        continue
        return done

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report(self.written(), self.total)

    def __enter__(self) -> CopyWatch:
        self._before = {path.name for path in self._blobs().glob("*")}
        self.report(0, self.total)  # starts the clock
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None:
            done = self.written()
            self.report(done, max(self.total, done))  # the last report: done of done
