"""builder.source.fetch with the real skopeo: every local transport, tampered images, architectures, the
cache, and `imgbuild inspect` end to end."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.errors import ArchMismatch, SourceError, VerificationError
from builder.source.cache import BlobCache
from builder.source.fetch import fetch_image
from builder.source.image import Compression, Image, LayerRole, Layout
from builder.source.inspect import kernel_versions
from builder.source.reference import parse_reference
from builder.source.verify import open_layer
from tests.source_oci import (
    KERNEL_ENTRIES,
    LayerSpec,
    blob_file,
    flip_byte,
    pack_archive,
    unpack_archive,
    write_multiarch_dir,
    write_oci_dir,
)

COMMIT = "3cb6170b6945065c2475bc16d7bebcc84f96b4c677811a6751e479b89f8c3770"
V1_MANIFEST = "sha256:7477731ebb732a7fdcf9a46c77967aa49d3519a411a81e713bb1297c87f061e3"
BASE_LAYER = "sha256:ee02768e65e6fb2bb7058282338896282910f3560de3e0d6cd9b1d5985e8360d"
DERIVED_LAYER = "sha256:d203cef7e598fa167cb9e8b703f9f20f746397eca49b51491da158d64968b429"
CONFIG = "sha256:54977ab597b345c2238ba28fe18aad751e5c59dc38b9393f6f349255f0daa7fc"
KERNEL = "5.10.18-200.x86_64"
ROOT = Path(__file__).resolve().parents[2]


def skopeo(*args: str) -> None:
    run.run(["skopeo", *args])


def imgbuild(*args: str, cache: Path, timeout: float = 120) -> run.Completed:
    return run.run(
        [sys.executable, "-m", "builder", *args],
        check=False,
        cwd=ROOT,
        env={"IMGBUILD_CACHE": str(cache), "PYTHONPATH": str(ROOT)},
        timeout=timeout,
    )


def check_exampleos(image: Image) -> None:
    assert image.layout is Layout.LEGACY_UNLABELLED
    assert image.ostree_commit == COMMIT
    assert [layer.role for layer in image.layers] == [LayerRole.OSTREE_COMMIT, LayerRole.DERIVED]
    assert image.architecture is Arch.X86_64
    assert kernel_versions(image) == (KERNEL,)


@pytest.fixture
def archive(ostree_ext_fixtures: Path) -> Path:
    return ostree_ext_fixtures / "exampleos-derive.ociarchive"


def test_oci_archive_fixtures(ostree_ext_fixtures: Path, tmp_path: Path) -> None:
    for name in ("exampleos-derive.ociarchive", "exampleos-derive-v2.ociarchive"):
        image = fetch_image(parse_reference(f"oci-archive:{ostree_ext_fixtures / name}"), cache=tmp_path)
        check_exampleos(image)
        assert image.blob_dir == tmp_path / "blobs"
        assert image.layers[0].digest == BASE_LAYER


@pytest.mark.parametrize(
    "form", ["oci:{dir}", "oci:{dir}:stable", "docker-archive:{tar}", "oci-archive:{arc}"]
)
def test_transports_made_by_skopeo(archive: Path, tmp_path: Path, form: str) -> None:
    source = f"oci-archive:{archive}"
    skopeo("copy", "-q", source, f"oci:{tmp_path / 'dir'}:stable")
    skopeo("copy", "-q", source, f"docker-archive:{tmp_path / 'image.tar'}:localhost/exampleos:latest")
    skopeo("copy", "-q", source, f"oci-archive:{tmp_path / 'copy.ociarchive'}")
    text = form.format(dir=tmp_path / "dir", tar=tmp_path / "image.tar", arc=tmp_path / "copy.ociarchive")
    image = fetch_image(parse_reference(text), cache=tmp_path / "cache")
    check_exampleos(image)
    if form.startswith("docker-archive"):
        # docker-archive holds plain tars (and calls them gzip): the digests are those of the tars.
        assert all(layer.compression is Compression.NONE for layer in image.layers)
        assert image.layers[0].digest == image.layers[0].diff_id
    else:
        assert image.manifest_digest == V1_MANIFEST


def test_zstd_via_skopeo(archive: Path, tmp_path: Path) -> None:
    skopeo("copy", "-q", "--dest-compress-format", "zstd", f"oci-archive:{archive}", f"oci:{tmp_path / 'z'}")
    image = fetch_image(parse_reference(f"oci:{tmp_path / 'z'}"), cache=tmp_path / "cache")
    assert all(layer.compression is Compression.ZSTD for layer in image.layers)
    assert image.layers[0].media_type.endswith("+zstd")
    check_exampleos(image)  # reads (and verifies) both zstd layers


def test_python_written_layers_each_compression(tmp_path: Path) -> None:
    layers = [
        LayerSpec({"usr/": None, "usr/share/a": b"a" * 5000}, Compression.GZIP, created_by="gzip layer"),
        LayerSpec({"usr/share/b": b"b" * 5000}, Compression.ZSTD, created_by="zstd layer"),
        LayerSpec(KERNEL_ENTRIES, Compression.NONE, created_by="plain layer"),
    ]
    written = write_oci_dir(tmp_path / "src", layers, labels={"containers.bootc": "1"}, empty_history=2)
    image = fetch_image(parse_reference(f"oci:{tmp_path / 'src'}"), cache=tmp_path / "cache")
    assert image.manifest_digest == written.manifest_digest
    assert image.layout is Layout.BOOTC
    assert [layer.compression for layer in image.layers] == [
        Compression.GZIP,
        Compression.ZSTD,
        Compression.NONE,
    ]
    assert [layer.created_by for layer in image.layers] == ["gzip layer", "zstd layer", "plain layer"]
    assert kernel_versions(image) == ("6.1.0-test",)
    store = BlobCache(tmp_path / "cache")
    assert all(store.is_verified(layer.digest, layer.diff_id) for layer in image.layers)


def _tampered_archive(archive: Path, tmp_path: Path, how: str) -> tuple[Path, str]:
    """A copy of the archive damaged one way; returns it and the digest the error must name."""
    layout = tmp_path / "layout"
    unpack_archive(archive, layout)
    if how == "layer-byte":
        flip_byte(blob_file(layout, BASE_LAYER), 2000)
        culprit = BASE_LAYER
    elif how == "layer-truncated":
        path = blob_file(layout, BASE_LAYER)
        os.truncate(path, path.stat().st_size - 100)
        culprit = BASE_LAYER
    elif how == "derived-byte":
        flip_byte(blob_file(layout, DERIVED_LAYER), 100)
        culprit = DERIVED_LAYER
    elif how == "config":
        path = blob_file(layout, CONFIG)
        path.write_bytes(path.read_bytes().replace(b'"version":"42.0"', b'"version":"43.0"'))
        culprit = CONFIG
    elif how == "manifest":
        path = blob_file(layout, V1_MANIFEST)
        path.write_bytes(path.read_bytes().replace(b'"42.0"', b'"43.0"'))
        culprit = V1_MANIFEST
    else:
        raise AssertionError(how)
    damaged = tmp_path / "damaged.ociarchive"
    pack_archive(layout, damaged)
    return damaged, culprit


TAMPERING = ["layer-byte", "layer-truncated", "derived-byte", "config", "manifest"]


@pytest.mark.parametrize("how", TAMPERING)
def test_tampered_archive(archive: Path, tmp_path: Path, how: str) -> None:
    damaged, culprit = _tampered_archive(archive, tmp_path, how)
    with pytest.raises(VerificationError) as info:
        image = fetch_image(parse_reference(f"oci-archive:{damaged}"), cache=tmp_path / "cache")
        kernel_versions(image)
    assert culprit in info.value.message
    assert "\n" not in info.value.message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("how", ["layer-byte", "manifest"])
def test_tampered_archive_cli(archive: Path, tmp_path: Path, how: str) -> None:
    damaged, culprit = _tampered_archive(archive, tmp_path, how)
    result = imgbuild("inspect", f"oci-archive:{damaged}", cache=tmp_path / "cache")
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert culprit in stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[0].startswith("imgbuild: error:")


def test_blob_damaged_in_the_cache_is_caught_and_replaced(archive: Path, tmp_path: Path) -> None:
    ref = parse_reference(f"oci-archive:{archive}")
    image = fetch_image(ref, cache=tmp_path)
    flip_byte(blob_file(tmp_path, BASE_LAYER), 3000)
    with pytest.raises(VerificationError, match=BASE_LAYER):
        kernel_versions(image)
    assert not blob_file(tmp_path, BASE_LAYER).exists()
    check_exampleos(fetch_image(ref, cache=tmp_path))  # fetched again, whole


def test_multiarch_index(tmp_path: Path) -> None:
    src = tmp_path / "multi"
    written = write_multiarch_dir(
        src,
        {
            "amd64": [LayerSpec({"usr/lib/modules/6.1.0-amd64/vmlinuz": b"x86"})],
            "arm64": [LayerSpec({"usr/lib/modules/6.1.0-arm64/vmlinuz": b"arm"})],
        },
    )
    ref = parse_reference(f"oci:{src}")
    arm = fetch_image(ref, arch=Arch.AARCH64, cache=tmp_path / "cache")
    assert arm.architecture is Arch.AARCH64
    assert arm.manifest_digest == written["arm64"].manifest_digest
    assert kernel_versions(arm) == ("6.1.0-arm64",)
    x86 = fetch_image(ref, arch=Arch.X86_64, cache=tmp_path / "cache")
    assert x86.manifest_digest == written["amd64"].manifest_digest
    assert kernel_versions(x86) == ("6.1.0-amd64",)
    host = fetch_image(ref, cache=tmp_path / "cache")
    assert host.architecture is Arch.host()

    only_arm = tmp_path / "only-arm"
    write_multiarch_dir(only_arm, {"arm64": [LayerSpec({"a": b"a"})], "s390x": [LayerSpec({"b": b"b"})]})
    with pytest.raises(ArchMismatch) as info:
        fetch_image(parse_reference(f"oci:{only_arm}"), arch=Arch.X86_64, cache=tmp_path / "cache")
    assert info.value.message.endswith("has no x86_64 image (it has: arm64, s390x)")


def test_single_arch_mismatch(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(ArchMismatch) as info:
        fetch_image(parse_reference(f"oci-archive:{archive}"), arch=Arch.AARCH64, cache=tmp_path)
    assert info.value.message == f"oci-archive:{archive} is an image for x86_64, not aarch64"
    assert not list((tmp_path / "blobs" / "sha256").iterdir()), "nothing is downloaded for the wrong arch"
    result = imgbuild("inspect", "--arch", "arm64", f"oci-archive:{archive}", cache=tmp_path)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines()[0].endswith("is an image for x86_64, not aarch64")


def test_unreachable_registry_cli(tmp_path: Path) -> None:
    start = time.monotonic()
    result = imgbuild("inspect", "registry.invalid/fedora/silverblue:36", cache=tmp_path, timeout=90)
    elapsed = time.monotonic() - start
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert elapsed < 60
    first = stderr.splitlines()[0]
    assert first.startswith("imgbuild: error: cannot read registry.invalid/fedora/silverblue:36: ")
    assert "Traceback" not in stderr
    print(f"unreachable registry: exit 2 after {elapsed:.2f} s: {first}")


def test_missing_local_image(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"cannot read oci-archive:/nonexistent/x.ociarchive: .*no such file"
    ):
        fetch_image(parse_reference("oci-archive:/nonexistent/x.ociarchive"), cache=tmp_path)


def test_inspect_cli_json_and_text(archive: Path, tmp_path: Path) -> None:
    result = imgbuild("inspect", "--json", f"oci-archive:{archive}", cache=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    doc = json.loads(result.out)
    assert doc["digest"] == V1_MANIFEST
    assert doc["ostree_commit"] == COMMIT
    assert doc["layout"] == "legacy-unlabelled"
    assert [layer["role"] for layer in doc["layers"]] == ["ostree-commit", "derived"]
    assert doc["kernels"] == [KERNEL]
    assert doc["bootable"] is True
    assert doc["origin"] == f"ostree-unverified-image:oci-archive:{archive}"
    text = imgbuild("inspect", f"oci-archive:{archive}", cache=tmp_path)
    assert text.returncode == 0
    for needle in (V1_MANIFEST, COMMIT, "ostree-commit", "derived", KERNEL, "bootable:      yes", BASE_LAYER):
        assert needle in text.out


def test_cache_is_content_addressed_and_reused(ostree_ext_fixtures: Path, tmp_path: Path) -> None:
    """A second fetch copies nothing; an update fetches only its new blobs. Times are printed."""
    big = tmp_path / "big"
    layers = [LayerSpec({"usr/share/blob": os.urandom(32 * 1024 * 1024)}, Compression.GZIP)]
    write_oci_dir(big, layers, labels={"ostree.commit": COMMIT})
    cache = tmp_path / "cache"
    ref = parse_reference(f"oci:{big}")

    start = time.monotonic()
    first = fetch_image(ref, cache=cache)
    with open_layer(first, first.layers[0]) as stream:
        while stream.read(1 << 20):
            pass
    first_s = time.monotonic() - start
    blob = blob_file(cache, first.layers[0].digest)
    inode, index_mtime = blob.stat().st_ino, (cache / "index.json").stat().st_mtime_ns

    start = time.monotonic()
    second = fetch_image(ref, cache=cache)
    with open_layer(second, second.layers[0]) as stream:
        while stream.read(1 << 20):
            pass
    second_s = time.monotonic() - start
    assert second == first
    assert blob.stat().st_ino == inode, "the cached blob was not rewritten"
    assert (cache / "index.json").stat().st_mtime_ns == index_mtime, "skopeo did not run a second copy"
    print(f"32 MiB image: first fetch+verify {first_s:.2f} s, second {second_s:.3f} s")
    assert second_s < first_s

    # An update sharing the base layer: the shared blob stays as it was, the new ones are added.
    v1 = fetch_image(
        parse_reference(f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive.ociarchive'}"), cache=cache
    )
    base = blob_file(cache, BASE_LAYER).stat()
    v2 = fetch_image(
        parse_reference(f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive-v2.ociarchive'}"), cache=cache
    )
    assert v2.layers[0].digest == v1.layers[0].digest == BASE_LAYER
    assert v2.layers[1].digest != v1.layers[1].digest
    after = blob_file(cache, BASE_LAYER).stat()
    assert (after.st_ino, after.st_mtime_ns) == (base.st_ino, base.st_mtime_ns)


def test_two_caches_do_not_share_state(archive: Path, tmp_path: Path) -> None:
    a = fetch_image(parse_reference(f"oci-archive:{archive}"), cache=tmp_path / "a")
    shutil.rmtree(tmp_path / "a")
    b = fetch_image(parse_reference(f"oci-archive:{archive}"), cache=tmp_path / "b")
    assert a.manifest_digest == b.manifest_digest
    check_exampleos(b)
