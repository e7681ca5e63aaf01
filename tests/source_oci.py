"""Small OCI images written with Python for the builder.source tests (tarfile, gzip, zstandard, sha256).

Not a test module: shared by tests/unit/test_source_*.py and tests/integration/test_source_*.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from builder.source.image import Compression

MEDIA = {
    Compression.NONE: "application/vnd.oci.image.layer.v1.tar",
    Compression.GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    Compression.ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
}

# A tar entry: bytes for a regular file, None for a directory, ("link", target) for a hardlink.
Entry = bytes | None | tuple[str, str]


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def tar_bytes(entries: dict[str, Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, entry in entries.items():
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if entry is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif isinstance(entry, tuple):
                info.type = tarfile.LNKTYPE
                info.linkname = entry[1]
                tar.addfile(info)
            else:
                info.size = len(entry)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(entry))
    return out.getvalue()


def compress(data: bytes, compression: Compression) -> bytes:
    if compression is Compression.GZIP:
        return gzip.compress(data, mtime=0)
    if compression is Compression.ZSTD:
        return bytes(zstandard.ZstdCompressor().compress(data))
    return data


@dataclass
class LayerSpec:
    entries: dict[str, Entry]
    compression: Compression = Compression.GZIP
    created_by: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]
    manifest: bytes


def _put(blobs: Path, data: bytes) -> str:
    digest = digest_of(data)
    path = blobs / "sha256" / digest.partition(":")[2]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def write_image(
    layout: Path,
    layers: list[LayerSpec],
    *,
    labels: dict[str, str] | None = None,
    arch: str = "amd64",
    empty_history: int = 0,
) -> Written:
    """Write the blobs of one image (config, layers, manifest) into `layout`/blobs; index.json untouched."""
    blobs = layout / "blobs"
    descriptors: list[dict[str, Any]] = []
    diff_ids: list[str] = []
    digests: list[str] = []
    for spec in layers:
        tar = tar_bytes(spec.entries)
        blob = compress(tar, spec.compression)
        digest = _put(blobs, blob)
        digests.append(digest)
        diff_ids.append(digest_of(tar))
        descriptor: dict[str, Any] = {
            "mediaType": MEDIA[spec.compression],
            "digest": digest,
            "size": len(blob),
        }
        if spec.annotations:
            descriptor["annotations"] = spec.annotations
        descriptors.append(descriptor)
    history: list[dict[str, Any]] = [{"created_by": "ENV x=1", "empty_layer": True}] * empty_history
    history += [{"created_by": spec.created_by} if spec.created_by else {} for spec in layers]
    config = json.dumps(
        {
            "created": "2026-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": labels or {}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }
    ).encode()
    config_digest = _put(blobs, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    manifest_digest = _put(blobs, manifest)
    return Written(manifest_digest, config_digest, tuple(digests), tuple(diff_ids), manifest)


def write_index(layout: Path, manifests: list[dict[str, Any]]) -> None:
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))


def manifest_entry(written: Written, *, tag: str | None = None, arch: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": written.manifest_digest,
        "size": len(written.manifest),
    }
    if tag is not None:
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    if arch is not None:
        entry["platform"] = {"architecture": arch, "os": "linux"}
    return entry


def write_oci_dir(layout: Path, layers: list[LayerSpec], **kwargs: Any) -> Written:
    """A complete single-image OCI layout directory."""
    written = write_image(layout, layers, **kwargs)
    write_index(layout, [manifest_entry(written)])
    return written


def write_multiarch_dir(layout: Path, per_arch: dict[str, list[LayerSpec]]) -> dict[str, Written]:
    """An OCI layout whose index.json names one image index with an entry per architecture."""
    written = {arch: write_image(layout, layers, arch=arch) for arch, layers in per_arch.items()}
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest_entry(w, arch=arch) for arch, w in written.items()],
        }
    ).encode()
    index_digest = _put(layout / "blobs", index)
    write_index(
        layout,
        [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": index_digest,
                "size": len(index),
            }
        ],
    )
    return written


def blob_file(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.partition(":")[2]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def pack_archive(layout: Path, archive: Path) -> None:
    """Tar an OCI layout directory into an oci-archive file (what skopeo writes, in a stable order)."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)


def unpack_archive(archive: Path, layout: Path) -> None:
    """Regular files only, names checked (this Python may predate tarfile's extraction filters)."""
    with tarfile.open(archive) as tar:
        for member in tar:
            name = Path(member.name)
            if not member.isfile() or name.is_absolute() or ".." in name.parts:
                continue
            f = tar.extractfile(member)
            assert f is not None
            (layout / name).parent.mkdir(parents=True, exist_ok=True)
            (layout / name).write_bytes(f.read())


# Files of a kernel-carrying derived layer and of a plain one, for the kernel scan.
KERNEL_ENTRIES: dict[str, Entry] = {
    "usr/": None,
    "usr/lib/": None,
    "usr/lib/modules/": None,
    "usr/lib/modules/6.1.0-test/": None,
    "usr/lib/modules/6.1.0-test/vmlinuz": b"not really a kernel\n",
}
