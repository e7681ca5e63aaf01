"""The OCI JSON documents (index, manifest, config), parsed into frozen data at the edge.

Docker schema 2 manifests and lists are read too (same shape, other media types): registries may serve them.
Anything malformed is a SourceError naming the document; raw dicts go no further than this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from builder.errors import SourceError
from builder.source.image import Compression

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

# Manifests and configs are small; anything bigger is not one (and is not read into memory).
MAX_DOCUMENT = 4 * 1024 * 1024

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")

_LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd": Compression.ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": Compression.ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar": Compression.NONE,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": Compression.GZIP,
    "application/vnd.docker.image.rootfs.diff.tar.zstd": Compression.ZSTD,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": Compression.GZIP,
}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    architecture: str | None = None  # index entries only
    os: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str]


@dataclass(frozen=True)
class HistoryEntry:
    created_by: str | None
    empty_layer: bool


@dataclass(frozen=True)
class Config:
    architecture: str
    os: str
    labels: Mapping[str, str]
    diff_ids: tuple[str, ...]
    history: tuple[HistoryEntry, ...]
    created: str | None


def _bad(what: str, why: str) -> SourceError:
    return SourceError(f"malformed {what}: {why}", hint="the image was not written by a conforming tool")


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(what, f"not JSON ({e})") from e
    if not isinstance(doc, dict):
        raise _bad(what, "not a JSON object")
    return doc


def _strings(value: object, what: str, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad(what, f"{key} is not a map of strings")
    return dict(value)


def _descriptor(value: object, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _bad(what, "a descriptor is not an object")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType", "")
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise _bad(what, f"unsupported or invalid digest {digest!r} (sha256 only)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad(what, f"invalid size for {digest}")
    if not isinstance(media_type, str):
        raise _bad(what, f"invalid mediaType for {digest}")
    platform = value.get("platform")
    arch = os_name = variant = None
    if isinstance(platform, dict):
        arch, os_name, variant = platform.get("architecture"), platform.get("os"), platform.get("variant")
    return Descriptor(
        media_type,
        digest,
        size,
        _strings(value.get("annotations"), what, "annotations"),
        arch if isinstance(arch, str) else None,
        os_name if isinstance(os_name, str) else None,
        variant if isinstance(variant, str) else None,
    )


def media_type_of(data: bytes) -> str:
    """The mediaType of a manifest or index (guessed from its shape when the field is absent)."""
    doc = _load(data, "manifest")
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def is_index(data: bytes) -> bool:
    return media_type_of(data) in INDEX_TYPES


def parse_index(data: bytes) -> tuple[Descriptor, ...]:
    doc = _load(data, "image index")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise _bad("image index", "no manifests list")
    return tuple(_descriptor(entry, "image index") for entry in entries)


def parse_manifest(data: bytes) -> Manifest:
    doc = _load(data, "manifest")
    media_type = media_type_of(data)
    if media_type not in MANIFEST_TYPES:
        raise _bad("manifest", f"unsupported media type {media_type}")
    if doc.get("schemaVersion") != 2:
        raise _bad("manifest", "schemaVersion is not 2")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise _bad("manifest", "no layers list")
    return Manifest(
        media_type,
        _descriptor(doc.get("config"), "manifest"),
        tuple(_descriptor(layer, "manifest") for layer in layers),
        _strings(doc.get("annotations"), "manifest", "annotations"),
    )


def parse_config(data: bytes) -> Config:
    doc = _load(data, "image config")
    arch, os_name = doc.get("architecture"), doc.get("os")
    if not isinstance(arch, str) or not isinstance(os_name, str):
        raise _bad("image config", "no architecture or os")
    inner = doc.get("config") or {}
    if not isinstance(inner, dict):
        raise _bad("image config", "config is not an object")
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and _DIGEST_RE.fullmatch(d) for d in diff_ids
    ):
        raise _bad("image config", "rootfs.diff_ids is not a list of sha256 digests")
    history_doc = doc.get("history") or []
    if not isinstance(history_doc, list):
        raise _bad("image config", "history is not a list")
    history = []
    for entry in history_doc:
        if not isinstance(entry, dict):
            raise _bad("image config", "a history entry is not an object")
        created_by = entry.get("created_by")
        history.append(
            HistoryEntry(
                created_by if isinstance(created_by, str) else None, entry.get("empty_layer") is True
            )
        )
    created = doc.get("created")
    return Config(
        arch,
        os_name,
        _strings(inner.get("Labels"), "image config", "config.Labels"),
        tuple(diff_ids),
        tuple(history),
        created if isinstance(created, str) else None,
    )


def compression_of(media_type: str) -> Compression:
    compression = _LAYER_COMPRESSION.get(media_type)
    if compression is None:
        raise SourceError(
            f"unsupported layer media type {media_type}",
            hint="imgbuild reads tar layers, uncompressed or compressed with gzip or zstd",
        )
    return compression
