"""builder.source.verify.open_layer and the cache's verification records, on images written in Python."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from builder.errors import VerificationError
from builder.source.cache import BlobCache
from builder.source.fetch import load_cached
from builder.source.image import Compression, Image
from builder.source.reference import parse_reference
from builder.source.verify import open_layer
from tests.source_oci import KERNEL_ENTRIES, LayerSpec, blob_file, digest_of, flip_byte, write_image

REF = parse_reference("oci:/nonexistent/test")
FILES = {"etc/": None, "etc/hello": b"hello\n" * 1000, "etc/hardlink": ("link", "etc/hello")}


def cached_image(root: Path, layers: list[LayerSpec], labels: dict[str, str] | None = None) -> Image:
    store = BlobCache(root)
    store.create()
    written = write_image(root, layers, labels=labels)
    return load_cached(store, written.manifest_digest, REF)


def read_names(image: Image, index: int) -> list[str]:
    with open_layer(image, image.layers[index]) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        return [member.name for member in tar]


@pytest.mark.parametrize("compression", list(Compression))
def test_each_compression_streams_and_is_recorded(tmp_path: Path, compression: Compression) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES, compression), LayerSpec(KERNEL_ENTRIES, compression)])
    assert image.layers[0].compression is compression
    assert read_names(image, 0) == ["etc", "etc/hello", "etc/hardlink"]
    store = BlobCache(tmp_path)
    assert store.is_verified(image.layers[0].digest, image.layers[0].diff_id)
    assert not store.is_verified(image.layers[1].digest, image.layers[1].diff_id)
    # Once recorded, the same blob opens again without a second verification pass.
    assert read_names(image, 0) == ["etc", "etc/hello", "etc/hardlink"]


def test_consumer_that_stops_early_is_still_verified(tmp_path: Path) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES)])
    layer = image.layers[0]
    with open_layer(image, layer) as stream:
        assert stream.read(10)  # the rest (content, tar padding, gzip trailer) is drained on exit
    assert BlobCache(tmp_path).is_verified(layer.digest, layer.diff_id)


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_one_byte_changed(tmp_path: Path, compression: Compression, where: str) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES, compression)])
    layer = image.layers[0]
    path = blob_file(tmp_path, layer.digest)
    offset = {"start": 600 if compression is Compression.NONE else 20, "middle": layer.size // 2, "end": -1}[
        where
    ]
    flip_byte(path, offset)
    with pytest.raises(VerificationError) as info:
        read_names(image, 0)
    assert layer.digest in info.value.message
    assert info.value.exit_code == 2
    assert "\n" not in info.value.message
    assert not path.exists(), "a blob that failed verification must leave the cache"


def test_truncated_blob(tmp_path: Path) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES, Compression.ZSTD)])
    layer = image.layers[0]
    path = blob_file(tmp_path, layer.digest)
    os.truncate(path, layer.size - 7)
    with pytest.raises(VerificationError, match=layer.digest):
        read_names(image, 0)


def test_truncated_uncompressed_blob_reports_size(tmp_path: Path) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES, Compression.NONE)])
    layer = image.layers[0]
    # Cut on a block boundary: the tar still ends cleanly, only the size and digest tell.
    os.truncate(blob_file(tmp_path, layer.digest), layer.size - 512)
    with pytest.raises(VerificationError, match=f"{layer.digest}.*size is {layer.size - 512} bytes"):
        with open_layer(image, layer) as stream:
            stream.read(100)


def test_wrong_diff_id(tmp_path: Path) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES)])
    layer = dataclasses.replace(image.layers[0], diff_id=digest_of(b"something else"))
    with pytest.raises(VerificationError, match="not the diff_id"):
        with open_layer(image, layer) as stream:
            stream.read()


def test_trailing_garbage_after_gzip_counts(tmp_path: Path) -> None:
    """Bytes after the compressed stream are part of the blob: the digest check must see them."""
    image = cached_image(tmp_path, [LayerSpec(FILES, Compression.GZIP)])
    layer = image.layers[0]
    data = blob_file(tmp_path, layer.digest).read_bytes()
    blob_file(tmp_path, layer.digest).write_bytes(data + gzip.compress(b""))
    with pytest.raises(VerificationError, match="size is"):
        read_names(image, 0)


def test_consumer_error_on_a_corrupt_blob_becomes_verification_error(tmp_path: Path) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES, Compression.NONE)])
    layer = image.layers[0]
    # Cut inside etc/hello's content: the tar reader fails first ("unexpected end of data").
    os.truncate(blob_file(tmp_path, layer.digest), layer.size // 2)
    with pytest.raises(VerificationError, match=layer.digest) as info:
        with open_layer(image, layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                f = tar.extractfile(member)
                if f is not None:
                    f.read()
    assert isinstance(info.value.__cause__, tarfile.TarError)


def test_consumer_error_on_a_good_blob_propagates(tmp_path: Path) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES)])
    layer = image.layers[0]
    with pytest.raises(KeyError), open_layer(image, layer):
        raise KeyError("the importer's own failure")
    assert blob_file(tmp_path, layer.digest).exists()
    assert not BlobCache(tmp_path).is_verified(layer.digest, layer.diff_id), "nothing was verified"


def test_a_recorded_blob_is_not_hashed_again(tmp_path: Path) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES, Compression.NONE)])
    layer = image.layers[0]
    read_names(image, 0)
    path = blob_file(tmp_path, layer.digest)
    before = path.stat()
    # Same size, same inode, mtime put back: only a hash would notice. None is done.
    with open(path, "r+b") as f:
        f.seek(path.read_bytes().index(b"hello\n"))
        f.write(b"j")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert read_names(image, 0) == ["etc", "etc/hello", "etc/hardlink"]
    # A blob rewritten later (new mtime) loses its record and is hashed again.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(VerificationError, match=layer.digest):
        read_names(image, 0)


def test_plain_layout_without_cache_state(tmp_path: Path) -> None:
    """An Image pointing at any OCI layout still verifies; there is nowhere to record it."""
    written = write_image(tmp_path, [LayerSpec(FILES)])
    store = BlobCache(tmp_path)
    image = load_cached(store, written.manifest_digest, REF)
    assert not (tmp_path / "imgbuild").exists()
    read_names(image, 0)
    flip_byte(blob_file(tmp_path, written.layer_digests[0]), 30)
    with pytest.raises(VerificationError):
        read_names(image, 0)
    assert blob_file(tmp_path, written.layer_digests[0]).exists(), "not our cache: nothing is removed"


def test_missing_blob(tmp_path: Path) -> None:
    image = cached_image(tmp_path, [LayerSpec(FILES)])
    blob_file(tmp_path, image.layers[0].digest).unlink()
    with pytest.raises(VerificationError, match="missing"):
        read_names(image, 0)


def test_manifest_and_config_digests_are_checked(tmp_path: Path) -> None:
    store = BlobCache(tmp_path)
    store.create()
    written = write_image(tmp_path, [LayerSpec(FILES)])
    flip_byte(blob_file(tmp_path, written.config_digest), 5)
    with pytest.raises(VerificationError, match=f"config {written.config_digest}"):
        load_cached(store, written.manifest_digest, REF)
    written = write_image(tmp_path, [LayerSpec(FILES)], labels={"a": "b"})
    flip_byte(blob_file(tmp_path, written.manifest_digest), 5)
    with pytest.raises(VerificationError, match=f"manifest {written.manifest_digest}"):
        load_cached(store, written.manifest_digest, REF)


def test_memory_stays_bounded(tmp_path: Path) -> None:
    """A 64 MiB layer streams through in far less memory than its size."""
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tar:
        info = tarfile.TarInfo("usr/share/zeros")
        info.size = 64 * 1024 * 1024
        with open("/dev/zero", "rb") as zeros:
            tar.addfile(info, zeros)
    store = BlobCache(tmp_path / "cache")
    store.create()
    written = write_image(store.root, [LayerSpec({"x": b"x"}, Compression.GZIP)])
    # Replace the small layer by the big one, written in chunks.
    image = load_cached(store, written.manifest_digest, REF)
    blob = tmp_path / "big.tar.gz"
    with open(big, "rb") as src, gzip.open(blob, "wb", compresslevel=1) as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    data = blob.read_bytes()
    digest = digest_of(data)
    (store.blob_dir / "sha256" / digest.partition(":")[2]).write_bytes(data)
    diff = hashlib.sha256()
    with open(big, "rb") as src:
        while chunk := src.read(1 << 20):
            diff.update(chunk)
    layer = dataclasses.replace(
        image.layers[0], digest=digest, size=len(data), diff_id=f"sha256:{diff.hexdigest()}"
    )
    big.unlink()
    tracemalloc.start()
    try:
        with open_layer(image, layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                f = tar.extractfile(member)
                assert f is not None
                while f.read(256 * 1024):
                    pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"
