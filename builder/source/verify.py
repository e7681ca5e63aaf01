"""Layer blobs, decompressed and verified in the one pass that reads them.

`open_layer` hashes the stored bytes (digest and size) and the decompressed bytes (diff_id) as the consumer
reads the tar stream, then drains what the consumer left (tar padding) and checks all three when the block
exits cleanly. Only after that may the consumer commit what it wrote. Memory stays bounded: nothing is held
beyond the read buffer.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import BinaryIO, Protocol, cast

import zstandard

try:  # ISA-L's inflate: 3-4x zlib's speed here, same API and checks
    from isal import isal_zlib as inflate_lib
except ImportError:  # e.g. the container image, which carries Debian's packages only: zlib, slower
    inflate_lib = zlib  # type: ignore[misc,no-redef,unused-ignore]

from builder.errors import VerificationError
from builder.source.cache import BlobCache
from builder.source.image import Compression, Image, Layer

CHUNK = 1024 * 1024
_ISAL_ERROR = cast(type[Exception], inflate_lib.error)  # its stub declares an instance, it is the class
_HINT = "the blob is corrupt or was tampered with; it was removed from the cache, fetch the image again"


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class _Hashing(io.RawIOBase):
    """Passes reads through, hashing and counting every byte."""

    def __init__(self, inner: _Reader, hashing: bool) -> None:
        self._inner = inner
        self.hash = hashlib.sha256() if hashing else None
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        """The inner reader's bytes as they are (RawIOBase.read would copy them twice)."""
        data = self._inner.read(CHUNK if size is None or size < 0 else size)
        self.count += len(data)
        if self.hash is not None:
            self.hash.update(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def digest(self) -> str:
        assert self.hash is not None
        return f"sha256:{self.hash.hexdigest()}"


class _Guarded(io.RawIOBase):
    """The decompressed stream: turns a decompressor's complaint into a VerificationError for the layer."""

    def __init__(self, inner: _Reader, layer: Layer) -> None:
        self._inner = inner
        self._layer = layer

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        try:
            return self._inner.read(CHUNK if size is None or size < 0 else size)
        except (OSError, EOFError, zlib.error, _ISAL_ERROR, zstandard.ZstdError) as e:
            raise VerificationError(
                f"layer {self._layer.digest}: its compressed data is corrupt ({e})", hint=_HINT
            ) from e

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PIPE_CHUNK = 1024 * 1024  # decompressed bytes per hand-over between the two threads
QUEUE_DEPTH = 4  # hand-overs in flight (memory: about QUEUE_DEPTH + 2 of them)
# Compressed bytes fed to inflate at a time: small enough that one call usually consumes all of it
# (a bounded output leaves the rest as `unconsumed_tail`, copied again on each call).
GZIP_INPUT = 256 * 1024


def sniff_compression(head: bytes) -> Compression:
    """What the blob's first bytes say it is. Media types lie: docker-archive calls plain tars gzip."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


class _Gunzip:
    """gzip through ISA-L's zlib-compatible inflate (which checks each member's CRC and length itself):
    decompression is the largest cost of an import after the writes. Python's GzipFile
    adds a second pass (its own crc32) and many small reads. Members follow each other; zero padding
    after a member is allowed, as GzipFile allows it; anything else is corrupt data."""

    def __init__(self, raw: _Reader) -> None:
        self._raw = raw
        self._inflate = inflate_lib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._in_member = False
        self._eof = False

    def _input(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        data = self._raw.read(GZIP_INPUT)
        if not data:
            if self._in_member:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            self._eof = True
        return data

    def read(self, size: int = -1, /) -> bytes:
        size = size if size > 0 else CHUNK
        while not self._eof:
            data = self._input()
            if not data:
                break
            if not self._in_member:
                data = data.lstrip(b"\0")
                if not data:
                    continue
                if len(data) < 2:
                    data += self._raw.read(1)
                if not data.startswith(GZIP_MAGIC):
                    raise OSError("Not a gzipped file (data after the last member)")
                self._in_member = True
            out = self._inflate.decompress(data, size)
            self._pending = self._inflate.unconsumed_tail
            if self._inflate.eof:
                self._pending = self._inflate.unused_data + self._pending
                self._inflate = inflate_lib.decompressobj(16 + zlib.MAX_WBITS)
                self._in_member = False
            if out:
                return out
        return b""

    def close(self) -> None:
        pass


def _decompressor(compression: Compression, stored: BinaryIO) -> _Reader:
    if compression is Compression.GZIP:
        return _Gunzip(stored)
    if compression is Compression.ZSTD:
        reader: _Reader = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True)
        return reader
    return stored


_END = b""


class _Pipeline(io.RawIOBase):
    """The decompressed stream, produced on a second thread.

    The producer reads, hashes and decompresses the blob and hashes what comes out (zlib, zstd and
    hashlib release the GIL on large buffers), while the consumer parses and writes: the two overlap on
    two cores. Chunks go through a bounded queue; an error of the producer is raised to the consumer at
    the point of the stream where it happened.
    """

    def __init__(self, source: _Reader, tick: Callable[[], None] | None = None) -> None:
        self._source = source
        self._tick = tick
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(QUEUE_DEPTH)
        self._stop = threading.Event()
        self._chunk = b""
        self._offset = 0
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name="layer-inflate", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(PIPE_CHUNK)
                if not self._put(data):
                    return
                if not data:
                    return
        except BaseException as e:  # raised on the consumer's side, where it is reported
            self._put(e)

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        if self._ended:
            return False
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if item is _END or not item:
            self._ended = True
            return False
        self._chunk, self._offset = item, 0
        if self._tick is not None:
            self._tick()
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if self._offset >= len(self._chunk) and not self._next():
            return b""
        if size is None or size < 0:
            size = len(self._chunk) - self._offset
        if self._offset == 0 and size >= len(self._chunk):
            data = self._chunk
        else:
            data = self._chunk[self._offset : self._offset + size]
        self._offset += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        super().close()


def _drain(stream: _Reader) -> None:
    while stream.read(CHUNK):
        pass


@contextmanager
def open_layer(
    image: Image, layer: Layer, on_read: Callable[[int], None] | None = None
) -> Iterator[BinaryIO]:
    """The decompressed tar stream of `layer`, verified against its digest, size and diff_id.

    VerificationError (naming the layer's digest) when the block exits cleanly and a check fails, or as
    soon as the compressed data cannot be decoded. A blob that passed is recorded in the cache and is not
    hashed again. Decompression and hashing run on a second thread (see _Pipeline). `on_read` hears,
    on the consumer's thread, how many bytes of the blob were read so far (for progress reports).
    """
    cache = BlobCache.for_blob_dir(image.blob_dir)
    known_good = cache is not None and cache.is_verified(layer.digest, layer.diff_id)
    path = image.blob_path(layer.digest)
    with ExitStack() as stack:
        try:
            blob = stack.enter_context(open(path, "rb"))
        except FileNotFoundError:
            raise VerificationError(
                f"layer {layer.digest} is missing from {image.blob_dir}",
                hint="fetch the image again (the cache was pruned or damaged)",
            ) from None
        stored = _Hashing(blob, hashing=not known_good)
        stored_buffered = stack.enter_context(io.BufferedReader(stored, CHUNK))
        compression = sniff_compression(stored_buffered.peek(len(ZSTD_MAGIC)))
        inflated = _decompressor(compression, stored_buffered)
        stack.callback(inflated.close)
        uncompressed = _Hashing(_Guarded(inflated, layer), hashing=not known_good)
        tick = (lambda: on_read(stored.count)) if on_read is not None else None
        stream = stack.enter_context(_Pipeline(uncompressed, tick))
        try:
            yield cast(BinaryIO, stream)
        except VerificationError:
            if cache is not None:
                cache.discard(layer.digest)
            raise
        except Exception as consumer_error:
            # A consumer that chokes on a corrupt blob (a truncated tar...) should hear that it is corrupt.
            if not known_good:
                failure = _check(stream, stored_buffered, stored, uncompressed, layer)
                if failure is not None:
                    if cache is not None:
                        cache.discard(layer.digest)
                    raise VerificationError(
                        f"layer {layer.digest} does not match: {failure}", hint=_HINT
                    ) from consumer_error
            raise
        if known_good:
            return
        failure = _check(stream, stored_buffered, stored, uncompressed, layer)
    if failure is not None:
        if cache is not None:
            cache.discard(layer.digest)
        raise VerificationError(f"layer {layer.digest} does not match: {failure}", hint=_HINT)
    if cache is not None:
        cache.mark_verified(layer.digest, layer.diff_id)


def _check(
    stream: _Pipeline, stored_stream: BinaryIO, stored: _Hashing, uncompressed: _Hashing, layer: Layer
) -> str | None:
    """Drain both streams, then what is wrong with the blob, or None."""
    try:
        _drain(stream)
    except VerificationError as e:
        return e.message.partition(": ")[2]
    # Whatever follows the compressed data still counts for the blob's digest and size.
    _drain(stored_stream)
    if stored.count != layer.size:
        return f"its size is {stored.count} bytes, the manifest says {layer.size}"
    if stored.digest() != layer.digest:
        return f"its content hashes to {stored.digest()}"
    if uncompressed.digest() != layer.diff_id:
        return f"its uncompressed content hashes to {uncompressed.digest()}, not the diff_id {layer.diff_id}"
    return None


@contextmanager
def open_layer_head(image: Image, layer: Layer) -> Iterator[BinaryIO]:
    """The decompressed stream of `layer`, NOT verified: only for content that authenticates itself.

    The ostree commit at the start of a commit layer is one: its signature and its checksum (the image's
    `ostree.commit` label) are checked on it, so it can be read without hashing the whole blob first.
    """
    path = image.blob_path(layer.digest)
    if not path.is_file():
        raise VerificationError(
            f"layer {layer.digest} is missing from {image.blob_dir}",
            hint="fetch the image again (the cache was pruned or damaged)",
        )
    with open(path, "rb") as buffered:
        inflated = _decompressor(sniff_compression(buffered.peek(len(ZSTD_MAGIC))), buffered)
        try:
            yield io.BufferedReader(_Guarded(inflated, layer), CHUNK)
        finally:
            inflated.close()
