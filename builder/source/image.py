"""The model of a fetched, classified ostree-native container image.

source/ produces an Image (fetched into the content-addressed cache, manifest and config digests verified,
layers classified); ostree/ consumes it through `open_layer`, which verifies each blob while it streams.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.arch import Arch


class Layout(enum.StrEnum):
    """How the image's layers carry the ostree commit (see research/ostree.md §1.2)."""

    CHUNKED = "chunked"  # current: layer 0 is the commit, chunks up to `ostree.final-diffid`, then derived
    LEGACY = "legacy"  # v0 with `ostree.diffid`: chunks first, the commit layer it names, then derived
    LEGACY_UNLABELLED = "legacy-unlabelled"  # v0 without labels: layer 0 is the commit, the rest derived
    BOOTC = "bootc"  # no ostree commit at all: every layer is a derived layer


class LayerRole(enum.StrEnum):
    OSTREE_COMMIT = "ostree-commit"
    OSTREE_CHUNK = "ostree-chunk"
    DERIVED = "derived"


class Compression(enum.StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


@dataclass(frozen=True)
class Layer:
    index: int
    digest: str  # "sha256:<hex>" of the blob as stored (compressed)
    size: int  # size of the blob as stored
    diff_id: str  # "sha256:<hex>" of the uncompressed tar, from config.rootfs.diff_ids
    media_type: str
    compression: Compression
    role: LayerRole
    annotations: Mapping[str, str] = field(default_factory=dict)
    created_by: str | None = None  # from the config's history, when it lines up


@dataclass(frozen=True)
class Image:
    reference: str  # the reference as skopeo spells it (transport:name...)
    manifest_digest: str  # "sha256:<hex>" of the manifest bytes
    manifest: bytes  # the raw manifest, as verified
    config: bytes  # the raw config, as verified
    architecture: Arch
    labels: Mapping[str, str]
    layout: Layout
    layers: tuple[Layer, ...]
    ostree_commit: str | None  # the `ostree.commit` label (None for BOOTC)
    blob_dir: Path  # directory holding blobs as <algorithm>/<hex> (an OCI layout's blobs/)
    created: str | None = None  # config `created` (RFC 3339), used as the merge commit's timestamp
    verified: tuple[str, ...] = ()  # what checked the image's signatures, one line each (for inspect)

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.blob_dir / algorithm / hexdigest

    def layers_with(self, role: LayerRole) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.role is role)
