"""One service per state directory: an exclusive flock on STATE/service.lock, holding the owner's pid.

A second service on the same directory would mark the first one's running composes failed (its recovery
after a restart) and run their queue twice, so it must stop before it touches anything. The lock is
released by the kernel when the holder dies, so a crashed service never blocks the next start.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from builder.errors import ImgbuildError

LOCK_NAME = "service.lock"


class StateInUse(ImgbuildError):
    """Another imgbuild service holds the state directory."""


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise StateInUse(
                f"the state directory {self.path.parent} is in use by another imgbuild service "
                f"(pid {holder if holder.isdigit() else 'unknown'})",
                hint="stop that service first, or give this one another --state",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (the file stays: removing it would race with a service locking it right now)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
