"""Independent VM boots two at a time.

The machines have two cores and a TCG guest keeps about one of them busy, so a test module that boots several
independent images starts them together through `boot_all` (in a module-scoped fixture) and each test then
checks its own outcome with `outcome()`: a failed boot fails only the test that owns it, with its own error.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# Two at a time: one TCG guest per core.
WORKERS = 2


class Outcomes(Generic[K, T]):
    """The results of `boot_all`: `outcome(key)` gives a job's value or raises the error it raised."""

    def __init__(self, futures: Mapping[K, Future[T]]) -> None:
        self._futures = dict(futures)

    def outcome(self, key: K) -> T:
        return self._futures[key].result()

    def keys(self) -> list[K]:
        return list(self._futures)


def boot_all(jobs: Mapping[K, Callable[[], T]], *, workers: int = WORKERS) -> Outcomes[K, T]:
    """Run every job (each one boot, typically `imgbuild boot ...` in a child process), `workers` at a
    time, in the order given; waits for all of them."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="boot") as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
    return Outcomes(futures)
