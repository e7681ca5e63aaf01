"""Write content objects on worker threads while the main thread keeps reading the layer stream.

Reading a layer (decompressing, hashing for digest and diff_id, parsing tar headers) is Python work on the
main thread; writing an object (libostree checksums it, writes a temporary file, links it into the
transaction's staging directory) is C work that releases the GIL, and libostree's writes are thread-safe
inside a transaction (its own pulls write from a thread pool). Overlapping the two roughly halves an
import on two cores.

Small objects go to the workers in batches (up to BATCH_OBJECTS objects or BATCH_BYTES bytes): handing each
one over separately (a future, a semaphore, a callback, the wake-ups of two threads) cost more interpreter
time, all of it under the GIL the reading thread needs, than writing it.

Memory stays bounded: at most MAX_BATCHES batches of small objects and MAX_LARGE large ones are in flight,
and a large one buffers at most LARGE_QUEUE chunks.
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
from builder.ostree.loose import ObjectWriteError, StagedFile

WRITE_HINT = (
    "the filesystem of the ostree repository refused the write (full, read-only, or without support for "
    "the object's extended attributes); free space or use a repository on another filesystem"
)
BATCH_OBJECTS = 128
BATCH_BYTES = 1024 * 1024
MAX_BATCHES = 4
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
        self.batches = threading.BoundedSemaphore(MAX_BATCHES)
        self.batch: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []
        self.batch_bytes = 0
        self.large = threading.BoundedSemaphore(MAX_LARGE)
        self.errors: list[BaseException] = []  # of finished writes, in the order they failed
        self.failed_object: str | None = None  # the checksum of the first write that failed

    def __enter__(self) -> ParallelWrites:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            try:
                self.flush()  # the last batch
            except BaseException:
                self.pool.shutdown(wait=True, cancel_futures=True)
                raise
            self.pool.shutdown(wait=True)
            self._reap()
            return
        # Queued writes are dropped, running ones finish; the caller aborts the transaction.
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _reap(self) -> None:
        """Raise the first error of a finished write (checked before each submission: a failed write
        stops the import at once, not at the end of the layer)."""
        if self.errors:
            raise self.errors[0]

    def _finished(self, future: Future[None], slots: threading.BoundedSemaphore) -> None:
        slots.release()
        if not future.cancelled() and (error := future.exception()) is not None:
            with self.count_lock:
                self.errors.append(error)

    def _failed(self, checksum: str, error: GLib.Error | ObjectWriteError) -> ImportFailure:
        with self.count_lock:
            if self.failed_object is None:
                self.failed_object = checksum
        if isinstance(error, ObjectWriteError):
            failure = self.fail(str(error))  # it names the object already
            if not error.corrupt:
                failure.hint = WRITE_HINT
            return failure
        return self.fail(f"object {checksum}: {error.message}")

    def _guarded_stream(self, checksum: str, work: Callable[[], bool]) -> None:
        try:
            wrote = work()
        except (GLib.Error, ObjectWriteError) as e:
            raise self._failed(checksum, e) from None
        if wrote:
            with self.count_lock:
                self.written += 1

    def submit(self, checksum: str, fn: Callable[..., Any], *args: Any, size: int = 0) -> None:
        """Run fn(*args) (a small write of `size` bytes already in memory) on a worker, with a batch."""
        self.batch.append((checksum, fn, args))
        self.batch_bytes += size
        if len(self.batch) >= BATCH_OBJECTS or self.batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand the batch of small writes to a worker."""
        if not self.batch:
            return
        batch = self.batch
        self.batch, self.batch_bytes = [], 0
        self._reap()
        self.batches.acquire()
        future = self.pool.submit(self._write_batch, batch)
        future.add_done_callback(lambda f: self._finished(f, self.batches))

    def _write_batch(self, batch: list[tuple[str, Callable[..., Any], tuple[Any, ...]]]) -> None:
        written = 0
        try:
            for checksum, fn, args in batch:
                if self.errors:
                    return  # another write failed: the import stops, no point in writing more
                try:
                    if self.present(checksum):
                        continue
                    fn(*args)
                except (GLib.Error, ObjectWriteError) as e:
                    raise self._failed(checksum, e) from None
                written += 1
        finally:
            with self.count_lock:
                self.written += written

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
                    if isinstance(writer, StagedFile):
                        writer.close(failed=True)
                    return False  # libostree's unfinished writer takes its temporary file with it
                if item is _END:
                    break
                assert isinstance(item, bytes)
                writer.write_all(item, None)
            writer.finish(None)
            return True

        future = self.pool.submit(self._guarded_stream, checksum, work)
        future.add_done_callback(lambda f: self._finished(f, self.large))
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
