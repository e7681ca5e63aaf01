"""Independent VM boots two at a time.

The machines have two cores and a TCG guest keeps about one of them busy, so a test module that boots several
independent images starts them together through `boot_all` (in a module-scoped fixture) and each test then
checks its own outcome with `outcome()`: a failed boot fails only the test that owns it, with its own error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from builder.example import SELFTEST_MARKER
from tests.imagebuilds import imgbuild

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# Two at a time: one TCG guest per core.
WORKERS = 2
# One virtual CPU per guest: measured faster than qemu's -smp 2 (imgbuild's default) both alone and two at
# once (benchmarks/boot_bench.py: 1.32-1.35x on 2 shared cores); under TCG each vCPU is a host thread, and
# two 2-vCPU guests would put four busy threads on two cores.
GUEST_SMP = 1


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


@dataclass(frozen=True)
class Booted:
    """What `imgbuild boot` printed: the serial console (stdout) and its own messages (stderr)."""

    console: str
    messages: str

    def line(self, marker: str = SELFTEST_MARKER) -> str:
        """The first console line with `marker` ("" when there is none)."""
        return next((x for x in self.console.splitlines() if marker in x), "")


def boot_image(image: str | os.PathLike[str], *args: str, timeout: float = 900) -> Booted:
    """`imgbuild boot IMAGE ARGS...` as users run it; a boot that fails raises with the console's last
    lines (BootFailed/BootTimeout carry them on stderr, imgbuild() puts stderr in the error)."""
    done = imgbuild(["boot", image, "--timeout", str(timeout), "--smp", str(GUEST_SMP), *args])
    return Booted(done.out, done.stderr.decode(errors="replace"))
