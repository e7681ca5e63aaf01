"""Transfer progress for uploads: throttled reports of bytes handled, bytes sent and the send rate."""

from __future__ import annotations

import threading
import time

from builder.progress import Progress, ProgressMode

INTERVAL = {ProgressMode.TERM: 0.2, ProgressMode.JSON: 1.0, ProgressMode.PLAIN: 10.0}


class Meter:
    """Counts bytes from the upload threads; reports at most every INTERVAL seconds, and once at the end."""

    def __init__(self, progress: Progress, what: str, total: int) -> None:
        self.progress = progress
        self.what = what
        self.total = total
        self.done = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = 0.0

    def add(self, *, done: int = 0, sent: int = 0) -> None:
        # One lock for counting and printing: the threads' reports must not interleave on the terminal.
        with self._lock:
            self.done = max(self.done, done)
            self.sent += sent
            now = time.monotonic()
            if now - self._last >= INTERVAL.get(self.progress.mode, 1.0):
                self._last = now
                self._report()

    def _report(self) -> None:
        rate = self.sent / max(time.monotonic() - self._start, 1e-6)
        self.progress.transfer(self.what, self.done, self.total, self.sent, rate)

    def finish(self) -> None:
        with self._lock:
            self.done = self.total
            self._report()
