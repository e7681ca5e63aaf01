"""A chunked (v1) image written by builder.ostree.encapsulate from a real ostree commit: fetched, classified
as CHUNKED, and its kernel found from the commit layer's dirtree objects although `vmlinuz` itself sits in
a chunk layer (which inspect does not read), with and without the `ostree.linux` label."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from builder import run
from builder.ostree.encapsulate import encapsulate
from builder.source.fetch import fetch_image
from builder.source.image import LayerRole, Layout
from builder.source.inspect import kernel_versions, scanned_layers
from builder.source.reference import parse_reference
from builder.source.verify import open_layer

KVER = "6.1.0-chunked"
PACKAGES = {
    f"linux-image-{KVER}": [f"/usr/lib/modules/{KVER}/vmlinuz", f"/usr/lib/modules/{KVER}/kernel/fake.ko"],
    "hello": ["/usr/bin/hello"],
    "data": ["/usr/share/data/blob.bin"],
}


def _make_commit(tmp: Path) -> tuple[Path, str]:
    tree = tmp / "tree"

    def put(path: str, data: bytes) -> None:
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)

    put(f"usr/lib/modules/{KVER}/vmlinuz", hashlib.sha512(b"kernel").digest() * 4000)
    put(f"usr/lib/modules/{KVER}/kernel/fake.ko", hashlib.sha512(b"module").digest() * 2000)
    put("usr/bin/hello", b"#!/bin/sh\necho hello\n")
    put("usr/share/data/blob.bin", hashlib.sha512(b"data").digest() * 3000)
    put("usr/etc/os-release", b"ID=test\n")
    status = "".join(
        f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n"
        for name in sorted(PACKAGES)
    )
    put("usr/lib/sysimage/dpkg/status", status.encode())
    for name, paths in PACKAGES.items():
        put(f"usr/lib/sysimage/dpkg/info/{name}.list", ("\n".join(paths) + "\n").encode())
    repo = tmp / "repo"
    run.run(["ostree", "init", f"--repo={repo}", "--mode=bare-user"])
    checksum = run.run(
        [
            "ostree",
            "commit",
            f"--repo={repo}",
            "--branch=test/os",
            f"--tree=dir={tree}",
            "--timestamp=2026-01-01T00:00:00Z",
            "--subject=chunked test",
        ]
    ).out.strip()
    return repo, checksum


def _without_label(layout: Path, label: str) -> None:
    """Rewrite the image in `layout` without one config label (new config, new manifest, new index)."""
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]

    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.partition(":")[2]

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blob(digest).write_bytes(data)
        return digest

    manifest = json.loads(blob(entry["digest"]).read_bytes())
    config = json.loads(blob(manifest["config"]["digest"]).read_bytes())
    del config["config"]["Labels"][label]
    config_bytes = json.dumps(config).encode()
    manifest["config"] = {**manifest["config"], "digest": put(config_bytes), "size": len(config_bytes)}
    manifest.get("annotations", {}).pop(label, None)
    manifest_bytes = json.dumps(manifest).encode()
    entry.update(digest=put(manifest_bytes), size=len(manifest_bytes))
    (layout / "index.json").write_text(json.dumps(index))


def _paths(image_layer_stream: tarfile.TarFile) -> set[str]:
    return {member.name for member in image_layer_stream}


def test_chunked_image_kernel_from_dirtrees(tmp_path: Path) -> None:
    repo, checksum = _make_commit(tmp_path)
    layout = tmp_path / "oci"
    encapsulate(repo, "test/os", f"oci:{layout}", max_layers=4)
    ref = parse_reference(f"oci:{layout}")
    image = fetch_image(ref, cache=tmp_path / "cache")
    assert image.layout is Layout.CHUNKED
    assert image.ostree_commit == checksum
    assert image.layers[0].role is LayerRole.OSTREE_COMMIT
    assert image.layers_with(LayerRole.OSTREE_CHUNK), "the packages went to chunk layers"
    assert not image.layers_with(LayerRole.DERIVED)
    assert image.labels.get("ostree.linux") == KVER

    # vmlinuz is in a chunk layer, not in the commit layer: only the dirtrees can tell.
    where = []
    for layer in image.layers:
        with open_layer(image, layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            if f"usr/lib/modules/{KVER}/vmlinuz" in _paths(tar):
                where.append(layer.role)
    assert where == [LayerRole.OSTREE_CHUNK]
    assert [layer.index for layer in scanned_layers(image)] == [0]
    assert kernel_versions(image) == (KVER,)

    _without_label(layout, "ostree.linux")
    unlabelled = fetch_image(ref, cache=tmp_path / "cache")
    assert "ostree.linux" not in unlabelled.labels
    assert unlabelled.manifest_digest != image.manifest_digest
    assert kernel_versions(unlabelled) == (KVER,)
