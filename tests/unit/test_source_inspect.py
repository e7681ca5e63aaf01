"""builder.source.inspect: kernels, bootability and the summary, on the ostree-ext archives and on images
written in Python. No skopeo here: the archives are unpacked into a cache directory by Python."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from builder.errors import NotBootable
from builder.source.cache import BlobCache
from builder.source.commit_tree import kernels_in_commit, metadata_object
from builder.source.fetch import load_cached
from builder.source.image import Compression, Image, LayerRole, Layout
from builder.source.inspect import describe, kernel_versions, require_bootable, scanned_layers
from builder.source.reference import parse_reference
from builder.source.verify import open_layer
from tests.source_oci import (
    KERNEL_ENTRIES,
    LayerSpec,
    blob_file,
    digest_of,
    flip_byte,
    tar_bytes,
    unpack_archive,
    write_image,
)

COMMIT = "3cb6170b6945065c2475bc16d7bebcc84f96b4c677811a6751e479b89f8c3770"
ARCHIVES = {
    "exampleos-derive.ociarchive": "sha256:7477731ebb732a7fdcf9a46c77967aa49d3519a411a81e713bb1297c87f061e3",
    "exampleos-derive-v2.ociarchive": None,
}


def from_archive(archive: Path, root: Path) -> Image:
    unpack_archive(archive, root)
    index = json.loads((root / "index.json").read_text())
    store = BlobCache(root)
    store.create()
    return load_cached(store, index["manifests"][0]["digest"], parse_reference(f"oci-archive:{archive}"))


def synthetic(root: Path, layers: list[LayerSpec], labels: dict[str, str] | None = None) -> Image:
    store = BlobCache(root)
    store.create()
    written = write_image(root, layers, labels=labels)
    return load_cached(store, written.manifest_digest, parse_reference("oci:/nonexistent"))


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_ostree_ext_archives(ostree_ext_fixtures: Path, tmp_path: Path, name: str) -> None:
    image = from_archive(ostree_ext_fixtures / name, tmp_path)
    if ARCHIVES[name]:
        assert image.manifest_digest == ARCHIVES[name]
    assert image.layout is Layout.LEGACY_UNLABELLED
    assert image.ostree_commit == COMMIT
    assert [layer.role for layer in image.layers] == [LayerRole.OSTREE_COMMIT, LayerRole.DERIVED]
    assert image.layers[0].digest.startswith("sha256:ee02768e")
    assert str(image.architecture) == "x86_64"
    assert image.labels["version"] == "42.0"
    assert image.created is not None and image.created.startswith("2021-09-")
    assert image.layers[1].created_by is not None and "ADD file:" in image.layers[1].created_by
    kernels = kernel_versions(image)
    assert kernels == ("5.10.18-200.x86_64",)
    require_bootable(image, kernels)
    summary = describe(image, kernels)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["bootable"] is True
    assert summary["ostree_commit"] == COMMIT
    assert [layer["role"] for layer in summary["layers"]] == ["ostree-commit", "derived"]
    # Both layers were read, so both are recorded as verified.
    for layer in image.layers:
        assert BlobCache(tmp_path).is_verified(layer.digest, layer.diff_id)


def test_bootc_image_kernel_in_derived_layer(tmp_path: Path) -> None:
    image = synthetic(
        tmp_path,
        [
            LayerSpec({"etc/": None, "etc/os-release": b"ID=test\n"}),
            LayerSpec(KERNEL_ENTRIES, Compression.ZSTD),
        ],
        labels={"containers.bootc": "1"},
    )
    assert image.layout is Layout.BOOTC
    assert image.ostree_commit is None
    kernels = kernel_versions(image)
    assert kernels == ("6.1.0-test",)
    require_bootable(image, kernels)
    assert describe(image)["bootable"] is True


def test_not_bootable(tmp_path: Path) -> None:
    image = synthetic(tmp_path, [LayerSpec({"etc/": None, "etc/os-release": b"ID=test\n"})])
    kernels = kernel_versions(image)
    assert kernels == ()
    with pytest.raises(NotBootable) as info:
        require_bootable(image, kernels)
    assert info.value.exit_code == 2 and info.value.hint
    assert describe(image)["bootable"] is False


def test_whiteouts_remove_kernels(tmp_path: Path) -> None:
    second = dict(KERNEL_ENTRIES)
    second["usr/lib/modules/6.2.0-new/"] = None
    second["usr/lib/modules/6.2.0-new/vmlinuz"] = b"k"
    image = synthetic(
        tmp_path,
        [
            LayerSpec(KERNEL_ENTRIES),
            LayerSpec(second),
            LayerSpec({"usr/lib/modules/.wh.6.1.0-test": b""}),
            LayerSpec({"./usr/lib/modules/6.3.0-last/vmlinuz": b"k"}, Compression.NONE),
        ],
    )
    assert kernel_versions(image) == ("6.2.0-new", "6.3.0-last")
    opaque = synthetic(
        tmp_path / "opaque",
        [LayerSpec(second), LayerSpec({"usr/lib/modules/.wh..wh..opq": b""})],
    )
    assert kernel_versions(opaque) == ()
    single = synthetic(
        tmp_path / "single",
        [LayerSpec(second), LayerSpec({"usr/lib/modules/6.2.0-new/.wh.vmlinuz": b""})],
    )
    assert kernel_versions(single) == ("6.1.0-test",)


def test_chunk_layers_are_not_read(tmp_path: Path) -> None:
    """A chunked image: the label names the kernel; a chunk layer (even a damaged one) is never opened."""
    commit_layer = LayerSpec({"sysroot/": None, "usr/": None, "usr/lib/": None, "usr/lib/modules/": None})
    chunk = LayerSpec(KERNEL_ENTRIES)
    derived = LayerSpec({"usr/share/x": b"x"})
    store = BlobCache(tmp_path)
    store.create()
    chunk_diff_id = digest_of(tar_bytes(chunk.entries))
    labels = {"ostree.commit": COMMIT, "ostree.final-diffid": chunk_diff_id, "ostree.linux": "6.5.0-label"}
    written = write_image(tmp_path, [commit_layer, chunk, derived], labels=labels)
    image = load_cached(store, written.manifest_digest, parse_reference("oci:/nonexistent"))
    assert [layer.role for layer in image.layers] == [
        LayerRole.OSTREE_COMMIT,
        LayerRole.OSTREE_CHUNK,
        LayerRole.DERIVED,
    ]
    assert [layer.index for layer in scanned_layers(image)] == [0, 2]
    flip_byte(blob_file(tmp_path, written.layer_digests[1]), 20)
    assert kernel_versions(image) == ("6.5.0-label",)


def test_kernels_from_the_commit_dirtrees(ostree_ext_fixtures: Path, tmp_path: Path) -> None:
    """ostree-ext's own commit layer: the .commit and .dirtree objects alone name the kernel."""
    image = from_archive(ostree_ext_fixtures / "exampleos-derive.ociarchive", tmp_path)
    commits: dict[str, bytes] = {}
    dirtrees: dict[str, bytes] = {}
    with open_layer(image, image.layers[0]) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            meta = metadata_object(member.name.removeprefix("./"))
            f = tar.extractfile(member) if meta is not None else None
            if meta is not None and f is not None:
                (commits if meta[1] == "commit" else dirtrees)[meta[0]] = f.read()
    assert list(commits) == [COMMIT]
    assert kernels_in_commit(commits[COMMIT], dirtrees) == {"5.10.18-200.x86_64"}
    # Missing or hostile objects give nothing, not a crash.
    assert kernels_in_commit(commits[COMMIT], {}) == set()
    assert kernels_in_commit(b"garbage", dirtrees) == set()
    assert kernels_in_commit(commits[COMMIT], dict.fromkeys(dirtrees, b"\xff" * 40)) == set()
    assert metadata_object("sysroot/ostree/repo/objects/3c/" + COMMIT[2:] + ".commit") == (COMMIT, "commit")
    assert metadata_object("sysroot/ostree/repo/objects/3c/short.dirtree") is None
