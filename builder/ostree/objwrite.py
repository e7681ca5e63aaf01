"""Write content objects on worker threads while the main thread keeps reading the layer stream.

Reading a layer (decompressing, hashing for digest and diff_id, parsing tar headers) is Python work on the
main thread; writing an object (libostree checksums it, writes a temporary file, links it into the
transaction's staging directory) is C work that releases the GIL, and libostree's writes are thread-safe
inside a transaction (its own pulls write from a thread pool). Overlapping the two roughly halves an
import on two cores.

Memory stays bounded: at most MAX_SMALL small objects (each under the inline threshold) and MAX_LARGE large
ones are in flight, and a large one buffers at most LARGE_QUEUE chunks.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from builder.errors import ImportFailure
from builder.ostree.gi import GLib

MAX_SMALL = 64
MAX_LARGE = 2
LARGE_QUEUE = 8
_END = object()
_ABORT = object()


def default_workers() -> int:
    return max(2, min(4, os.cpu_count() or 2))


class ParallelWrites:
    """A context manager: submit object writes; leaving the block waits for all and raises the first error."""

    def __init__(
        self,
        fail: Callable[[str], ImportFailure],
        present: Callable[[str], bool],
        workers: int | None = None,
    ) -> None:
        self.fail = fail
        self.present = present  # asked on the worker: the reading thread makes no libostree call per object
        self.written = 0
        self.count_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="ostree-write")
        self.small = threading.BoundedSemaphore(MAX_SMALL)
        self.large = threading.BoundedSemaphore(MAX_LARGE)
        self.futures: set[Future[None]] = set()

    def __enter__(self) -> ParallelWrites:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            # Queued writes are dropped, running ones finish; the caller aborts the transaction.
            self.pool.shutdown(wait=True, cancel_futures=True)
            return
        self.pool.shutdown(wait=True)
        self._reap(all_done=True)

    def _reap(self, *, all_done: bool = False) -> None:
        done = self.futures if all_done else {f for f in self.futures if f.done()}
        self.futures -= done
        for future in done:
            error = future.exception()
            if error is not None:
                raise error

    def _guarded(self, checksum: str, write: Callable[[], Any]) -> None:
        try:
            if self.present(checksum):
                return
            write()
        except GLib.Error as e:
            raise self.fail(f"object {checksum}: {e.message}") from None
        with self.count_lock:
            self.written += 1

    def _guarded_stream(self, checksum: str, work: Callable[[], bool]) -> None:
        try:
            wrote = work()
        except GLib.Error as e:
            raise self.fail(f"object {checksum}: {e.message}") from None
        if wrote:
            with self.count_lock:
                self.written += 1

    def submit(self, checksum: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) (a small write whose data is already in memory) on a worker."""
        self._reap()
        self.small.acquire()
        future = self.pool.submit(self._guarded, checksum, lambda: fn(*args))
        future.add_done_callback(lambda _: self.small.release())
        self.futures.add(future)

    def stream(self, checksum: str, open_writer: Callable[[], Any], chunks: Iterator[bytes]) -> None:
        """Feed `chunks` (read here, on the calling thread) to a ContentWriter running on a worker."""
        self._reap()
        self.large.acquire()
        feed: queue.Queue[object] = queue.Queue(maxsize=LARGE_QUEUE)

        def work() -> bool:
            if self.present(checksum):
                while feed.get() not in (_END, _ABORT):
                    pass  # already in the repository: the data only has to be read past
                return False
            writer = open_writer()
            while True:
                item = feed.get()
                if item is _ABORT:
                    return False  # the unfinished writer's temporary file goes away with it
                if item is _END:
                    break
                assert isinstance(item, bytes)
                writer.write_all(item, None)
            writer.finish(None)
            return True

        future = self.pool.submit(self._guarded_stream, checksum, work)
        future.add_done_callback(lambda _: self.large.release())
        self.futures.add(future)
        try:
            for chunk in chunks:
                self._put(feed, chunk, future)
            self._put(feed, _END, future)
        except BaseException:
            _abort(feed)
            raise

    @staticmethod
    def _put(feed: queue.Queue[object], item: object, future: Future[None]) -> None:
        while True:
            try:
                feed.put(item, timeout=0.2)
                return
            except queue.Full:
                if future.done():
                    future.result()  # the writer failed: raise its error (it reads no more)
                    raise AssertionError("writer ended before its data") from None


def _abort(feed: queue.Queue[object]) -> None:
    while True:
        try:
            feed.get_nowait()
        except queue.Empty:
            break
    with contextlib.suppress(queue.Full):  # emptied just above, and there is one consumer
        feed.put_nowait(_ABORT)
