"""Layer blobs, decompressed and verified in the one pass that reads them.

`open_layer` hashes the stored bytes (digest and size) and the decompressed bytes (diff_id) as the consumer
reads the tar stream, then drains what the consumer left (tar padding) and checks all three when the block
exits cleanly. Only after that may the consumer commit what it wrote. Memory stays bounded: nothing is held
beyond the read buffer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import BinaryIO, Protocol

import zstandard

from builder.errors import VerificationError
from builder.source.cache import BlobCache
from builder.source.image import Compression, Image, Layer

CHUNK = 1024 * 1024
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

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        if self.hash is not None:
            self.hash.update(data)
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

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as e:
            raise VerificationError(
                f"layer {self._layer.digest}: its compressed data is corrupt ({e})", hint=_HINT
            ) from e
        n = len(data)
        buffer[:n] = data
        return n


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff_compression(head: bytes) -> Compression:
    """What the blob's first bytes say it is. Media types lie: docker-archive calls plain tars gzip."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


def _decompressor(compression: Compression, stored: BinaryIO) -> _Reader:
    if compression is Compression.GZIP:
        return gzip.GzipFile(fileobj=stored, mode="rb")
    if compression is Compression.ZSTD:
        reader: _Reader = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True)
        return reader
    return stored


def _drain(stream: BinaryIO) -> None:
    while stream.read(CHUNK):
        pass


@contextmanager
def open_layer(image: Image, layer: Layer) -> Iterator[BinaryIO]:
    """The decompressed tar stream of `layer`, verified against its digest, size and diff_id.

    VerificationError (naming the layer's digest) when the block exits cleanly and a check fails, or as
    soon as the compressed data cannot be decoded. A blob that passed is recorded in the cache and is not
    hashed again.
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
        stream = stack.enter_context(io.BufferedReader(uncompressed, CHUNK))
        try:
            yield stream
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
    stream: BinaryIO, stored_stream: BinaryIO, stored: _Hashing, uncompressed: _Hashing, layer: Layer
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
