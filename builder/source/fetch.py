"""Fetch an image into the content-addressed cache and describe it as an Image.

1. Read the source's top manifest with `skopeo inspect --raw` and check it against the digest that names
   it (a pinned reference, or an OCI layout's index.json).
2. A multi-arch index resolves to the requested architecture's entry (ArchMismatch when it has none).
3. Unless the cache already holds that manifest and every blob it names, `skopeo copy` it into the cache
   (blobs already there are reused, not fetched). skopeo checks each blob it copies against its digest.
4. Verify the cached manifest and config digests, classify the layers. Layer blobs are verified while they
   are read (`verify.open_layer`), once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tarfile
import tempfile
from pathlib import Path

from builder import paths
from builder.arch import Arch
from builder.cachedir import locks
from builder.errors import ArchMismatch, ImgbuildError, SourceError, VerificationError
from builder.source import oci
from builder.source.cache import BlobCache, default_root
from builder.source.classify import build_layers, classify
from builder.source.copywatch import CopyWatch, OnBytes
from builder.source.image import Image, Layer
from builder.source.policy import Policy
from builder.source.reference import Reference, Signature, Transport
from builder.source.skopeo import PolicyRefused, Skopeo
from builder.source.verify import ZSTD_MAGIC, sniff_compression

log = logging.getLogger(__name__)

_REF_NAME = "org.opencontainers.image.ref.name"
_TAMPERED = "the image is corrupt or was tampered with; fetch it again from a trusted source"


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _key(digest: str, arch: Arch | None) -> str:
    hexdigest = digest.partition(":")[2]
    return f"{hexdigest}-{arch}" if arch is not None else hexdigest


def _local_index(ref: Reference) -> bytes | None:
    """index.json of an oci: directory or oci-archive: file (None for other transports or when absent)."""
    try:
        if ref.transport is Transport.OCI:
            return (Path(ref.name) / "index.json").read_bytes()
        if ref.transport is Transport.OCI_ARCHIVE:
            with tarfile.open(ref.name, "r:") as archive:
                for member in archive:
                    if member.isfile() and member.name.lstrip("./") == "index.json":
                        f = archive.extractfile(member)
                        return f.read(oci.MAX_DOCUMENT) if f is not None else None
    except (OSError, tarfile.TarError):
        return None  # skopeo has read it already; it will give the better error if it cannot
    return None


def _local_blob(ref: Reference, digest: str) -> bytes | None:
    """A manifest or config of an oci: directory or oci-archive: file, read directly and checked against
    its digest; None when it is not there like that (then skopeo reads it, and gives the better error).

    skopeo unpacks a whole oci-archive into a temporary directory for every command: reading the few
    documents here leaves one unpacking (the copy) instead of three for a first fetch."""
    algorithm, _, hexdigest = digest.partition(":")
    name = f"blobs/{algorithm}/{hexdigest}"
    data: bytes | None = None
    try:
        if ref.transport is Transport.OCI:
            with open(Path(ref.name) / name, "rb") as document:
                data = document.read(oci.MAX_DOCUMENT + 1)
        elif ref.transport is Transport.OCI_ARCHIVE:
            with tarfile.open(ref.name, "r:") as archive:
                for member in archive:
                    if member.isfile() and member.name.removeprefix("./") == name:
                        member_file = archive.extractfile(member)
                        data = member_file.read(oci.MAX_DOCUMENT + 1) if member_file is not None else None
                        break
    except (OSError, tarfile.TarError):
        return None
    if data is None or len(data) > oci.MAX_DOCUMENT or algorithm != "sha256" or sha256_digest(data) != digest:
        return None
    return data


def _local_config(ref: Reference, manifest: bytes) -> bytes | None:
    try:
        return _local_blob(ref, oci.parse_manifest(manifest).config.digest)
    except ImgbuildError:
        return None


def claimed_manifest_digest(ref: Reference) -> str | None:
    """The digest the reference says its manifest has: the pinned digest, or the OCI layout's index entry."""
    if ref.digest is not None:
        return ref.digest
    index = _local_index(ref)
    if index is None:
        return None
    entries = oci.parse_index(index)
    if ref.tag is not None:
        tagged = [e for e in entries if e.annotations.get(_REF_NAME) == ref.tag]
        return tagged[0].digest if len(tagged) == 1 else None
    return entries[0].digest if len(entries) == 1 else None


def _pick_instance(entries: tuple[oci.Descriptor, ...], arch: Arch, ref: Reference) -> oci.Descriptor:
    for entry in entries:
        if entry.architecture == arch.oci and entry.os in (None, "linux"):
            return entry
    offered = sorted({e.architecture for e in entries if e.architecture}) or ["none"]
    raise ArchMismatch(
        f"{ref} has no {arch} image (it has: {', '.join(offered)})",
        hint="pass --arch with one of the architectures the image has",
    )


def _image_arch(config: oci.Config, ref: Reference) -> Arch:
    try:
        return Arch.parse(config.architecture)
    except ImgbuildError:
        raise ArchMismatch(
            f"{ref} is an image for {config.architecture}; imgbuild builds for x86_64 and aarch64",
            hint="use the image built for x86_64 (amd64) or aarch64 (arm64)",
        ) from None


def _check_arch(actual: Arch, wanted: Arch | None, ref: Reference) -> None:
    if wanted is not None and actual is not wanted:
        raise ArchMismatch(
            f"{ref} is an image for {actual}, not {wanted}",
            hint=f"pass --arch {actual}, or use the {wanted} build of the image",
        )


def _complete(store: BlobCache, digest: str) -> bool:
    """The cache holds this manifest and every blob it names."""
    try:
        data = store.read_small(digest, oci.MAX_DOCUMENT)
        if data is None:
            return False
        manifest = oci.parse_manifest(data)
    except (ValueError, SourceError):
        return False
    return all(store.has(d.digest) for d in (manifest.config, *manifest.layers))


def _read_verified(store: BlobCache, digest: str, size: int | None, what: str, ref: Reference) -> bytes:
    try:
        data = store.read_small(digest, oci.MAX_DOCUMENT)
    except ValueError:
        data = b"\0" * (oci.MAX_DOCUMENT + 1)
    if data is None:
        raise SourceError(f"the {what} {digest} of {ref} is missing from the cache", hint="fetch it again")
    actual = sha256_digest(data)
    if actual != digest or (size is not None and len(data) != size):
        store.discard(digest)
        raise VerificationError(
            f"the {what} {digest} of {ref} does not match: its content hashes to {actual}, {len(data)} bytes",
            hint=_TAMPERED,
        )
    return data


def _true_compression(store: BlobCache, layer: Layer) -> Layer:
    """The layer with the compression its blob really has (docker-archive labels plain tars as gzip)."""
    try:
        with open(store.blob_path(layer.digest), "rb") as f:
            head = f.read(len(ZSTD_MAGIC))
    except FileNotFoundError:
        return layer  # open_layer will say it is missing
    actual = sniff_compression(head)
    return layer if actual is layer.compression else dataclasses.replace(layer, compression=actual)


def load_cached(store: BlobCache, manifest_digest: str, ref: Reference) -> Image:
    """The Image for a manifest already in the cache; manifest and config digests verified."""
    manifest_bytes = _read_verified(store, manifest_digest, None, "manifest", ref)
    manifest = oci.parse_manifest(manifest_bytes)
    config_bytes = _read_verified(store, manifest.config.digest, manifest.config.size, "config", ref)
    config = oci.parse_config(config_bytes)
    classification = classify(config.labels, config.diff_ids, source=str(ref))
    return Image(
        reference=ref.skopeo,
        manifest_digest=manifest_digest,
        manifest=manifest_bytes,
        config=config_bytes,
        architecture=_image_arch(config, ref),
        labels=dict(config.labels),
        layout=classification.layout,
        layers=tuple(
            _true_compression(store, layer)
            for layer in build_layers(manifest, config, classification.roles, source=str(ref))
        ),
        ostree_commit=classification.ostree_commit,
        blob_dir=store.blob_dir,
        created=config.created,
    )


def _to_fetch(store: BlobCache, top: bytes) -> int:
    """Bytes of a manifest and the blobs it names that the cache lacks (0, not known, for an index)."""
    if oci.is_index(top):
        return 0
    try:
        manifest = oci.parse_manifest(top)
    except SourceError:
        return 0
    missing = sum(d.size for d in (manifest.config, *manifest.layers) if not store.has(d.digest))
    return missing + (0 if store.has(sha256_digest(top)) else len(top))


def _copy(
    skopeo: Skopeo,
    store: BlobCache,
    source: Reference,
    arch: Arch,
    source_digest: str,
    key: str,
    may_skip: bool,
    watch: CopyWatch | None,
) -> str:
    with store.locked(), tempfile.TemporaryDirectory(prefix="imgbuild-fetch-") as tmp:
        # Another imgbuild may have copied it while this one waited for the lock.
        cached = store.resolved(key)
        if cached is not None and _complete(store, cached) and may_skip:
            return cached
        tag = f"sha256-{source_digest.partition(':')[2]}"
        log.info("fetching %s into %s", source, store.root)
        if watch is None:
            return skopeo.copy_to_layout(source, store.root, tag, arch, Path(tmp) / "digest")
        with watch:
            return skopeo.copy_to_layout(source, store.root, tag, arch, Path(tmp) / "digest")


def fetch_image(
    ref: Reference,
    *,
    arch: Arch | None = None,
    cache: Path | None = None,
    authfile: Path | None = None,
    tls_verify: bool = True,
    policy: Policy | None = None,
    on_bytes: OnBytes | None = None,
) -> Image:
    """Resolve `ref` (an index to `arch`, default the host's), copy it into the cache, verify, classify.

    The containers signature policy is enforced by skopeo's copy; a cached image is used without that copy
    only when the policy accepts anything (else skopeo copies again, reusing every cached blob, and so
    checks the signatures again). `on_bytes(done, total)` hears the bytes the copy writes (total 0: not
    known, when the reference names an index).
    """
    policy = policy or Policy()
    policy.check_paths()
    if ref.signature is Signature.CONTAINER_POLICY and not policy.requires_signature(ref):
        raise PolicyRefused(
            f"{ref.origin}: the containers signature policy {policy.file()} accepts {ref} unsigned",
            hint="an ostree-image-signed: reference needs a policy that requires a signature for it "
            "(signedBy or sigstoreSigned; pass --policy FILE)",
        )
    skopeo = Skopeo(authfile, tls_verify, policy)
    if cache is None:
        # Into the imgbuild cache: `cache prune` waits while blobs no lease covers are written and read.
        with locks.writing(paths.cache_dir()):
            image = _fetch(ref, arch, cache, skopeo, policy.accepts_anything(), on_bytes)
    else:  # the caller holds the lock (the build's import), or the cache is the caller's own directory
        image = _fetch(ref, arch, cache, skopeo, policy.accepts_anything(), on_bytes)
    if policy.requires_signature(ref):
        return dataclasses.replace(image, verified=(f"{policy.describe(ref)}: accepted by skopeo",))
    return image


def _fetch(
    ref: Reference,
    arch: Arch | None,
    cache: Path | None,
    skopeo: Skopeo,
    may_skip: bool,
    on_bytes: OnBytes | None,
) -> Image:
    store = BlobCache(cache if cache is not None else default_root())
    try:
        store.create()
    except OSError as e:
        raise SourceError(
            f"cannot use the image cache {store.root}: {e.strerror}",
            hint="set IMGBUILD_CACHE (or pass --cache) to a writable directory",
        ) from e
    wanted = arch or Arch.host()

    # A reference pinned to a manifest already cached needs no network at all (unless signatures count).
    if ref.digest is not None and may_skip:
        for key in (_key(ref.digest, None), _key(ref.digest, wanted)):
            cached = store.resolved(key)
            if cached is not None and _complete(store, cached):
                image = load_cached(store, cached, ref)
                _check_arch(image.architecture, arch, ref)
                return image

    claimed = claimed_manifest_digest(ref)
    local = _local_blob(ref, claimed) if claimed is not None else None
    top = local if local is not None else skopeo.raw_manifest(ref)
    top_digest = sha256_digest(top)
    if claimed is not None and claimed != top_digest:
        raise VerificationError(
            f"the manifest {claimed} of {ref} does not match: its content hashes to {top_digest}",
            hint=_TAMPERED,
        )
    if oci.is_index(top):
        entry = _pick_instance(oci.parse_index(top), wanted, ref)
        source, source_digest, source_type = ref.pinned(entry.digest), entry.digest, entry.media_type
        key = _key(top_digest, wanted)
    else:
        source, source_digest, source_type = ref, top_digest, oci.media_type_of(top)
        key = _key(top_digest, None)

    cached = store.resolved(key)
    if cached is None or not _complete(store, cached) or not may_skip:
        if arch is not None and not oci.is_index(top):
            # Refuse a single-arch image for another architecture before downloading its layers.
            config = _local_config(ref, top) if local is not None else None
            if config is None:
                config = skopeo.raw_config(ref, None)
            _check_arch(_image_arch(oci.parse_config(config), ref), arch, ref)
        watch = CopyWatch(store.root, _to_fetch(store, top), on_bytes) if on_bytes is not None else None
        cached = _copy(skopeo, store, source, wanted, source_digest, key, may_skip, watch)
        # skopeo writes an OCI manifest unchanged; only a Docker-format one is converted (new digest), and
        # containers-storage keeps layers uncompressed, so a copy out of it compresses them (new digests).
        if (
            source_type == oci.OCI_MANIFEST
            and cached != source_digest
            and ref.transport is not Transport.CONTAINERS_STORAGE
        ):
            raise VerificationError(
                f"the manifest {source_digest} of {ref} was stored as {cached}",
                hint=_TAMPERED,
            )
        store.remember(key, cached)
    image = load_cached(store, cached, ref)
    _check_arch(image.architecture, arch, ref)
    return image
