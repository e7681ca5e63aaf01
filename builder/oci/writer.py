"""A small, deterministic writer of OCI image layouts and oci-archives.

Blobs are streamed: each is hashed while it is written to a temporary name inside `blobs/sha256/` and renamed
to its digest when complete, so a layout never holds a partial blob under a real name. A layer is a tar stream
(`TarStream`) fed through `LayerWriter`, which hashes the uncompressed bytes (the diff_id) and gzips them with
fixed parameters, so the same entries always give the same blob. An oci-archive is the same layout written in
a temporary directory beside the archive, then tarred to a temporary file that is renamed to the archive.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from builder.errors import ImgbuildError

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_TAG = "latest"

# gzip with a fixed level and zlib's own header (mtime 0, no file name): same input, same blob (for one zlib).
GZIP_LEVEL = 6
_GZIP_WBITS = 16 + zlib.MAX_WBITS
BLOCK = tarfile.BLOCKSIZE
COPY_CHUNK = 1 << 20

# What `org.opencontainers.image.ref.name` may hold (the OCI image-layout grammar, as skopeo checks it).
_REF_RE = re.compile(r"^[A-Za-z0-9._-]+(?:[:/@][A-Za-z0-9._-]+)*$")


class DestinationError(ImgbuildError):
    """An output reference imgbuild cannot write to."""


class Transport(enum.StrEnum):
    OCI = "oci"
    OCI_ARCHIVE = "oci-archive"


@dataclass(frozen=True)
class Destination:
    transport: Transport
    path: Path  # absolute
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.transport}:{self.path}:{self.tag}"


def parse_destination(text: str) -> Destination:
    """`oci:DIR[:TAG]` or `oci-archive:FILE[:TAG]`; like skopeo, the path ends at its first colon."""
    transport_name, sep, rest = text.partition(":")
    hint = "write oci:DIR[:TAG] or oci-archive:FILE[:TAG], e.g. oci-archive:./os.ociarchive:latest"
    if not sep or transport_name not in {t.value for t in Transport}:
        raise DestinationError(f"unsupported destination {text!r}", hint=hint)
    path_text, _, tag = rest.partition(":")
    if not path_text:
        raise DestinationError(f"destination {text!r} names no path", hint=hint)
    tag = tag or DEFAULT_TAG
    if not _REF_RE.match(tag):
        raise DestinationError(f"invalid tag {tag!r} in {text!r}", hint="a tag is letters, digits and -._")
    path = Path(os.path.normpath(Path(path_text).absolute()))
    transport = Transport(transport_name)
    if transport is Transport.OCI_ARCHIVE and path.is_dir():
        raise DestinationError(f"{path} is a directory", hint="an oci-archive destination names a file")
    if transport is Transport.OCI and path.exists():
        if not path.is_dir():
            raise DestinationError(f"{path} exists and is not a directory", hint=hint)
        if any(path.iterdir()) and not (path / "oci-layout").is_file():
            raise DestinationError(
                f"{path} is a non-empty directory that is not an OCI layout",
                hint="name a new or empty directory, or an existing OCI layout to add a tag to",
            )
    return Destination(transport, path, tag)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace: the same data always gives the same bytes (and digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class BlobWriter:
    """A file-like sink that becomes `blobs/sha256/<hex>` on commit (a temporary name until then)."""

    def __init__(self, blob_dir: Path, created: list[Path]) -> None:
        self._blob_dir = blob_dir
        self._created = created
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=blob_dir)
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)
        return len(data)

    def commit(self, media_type: str, annotations: Mapping[str, str] | None = None) -> Descriptor:
        self._file.close()
        hexdigest = self._hash.hexdigest()
        final = self._blob_dir / hexdigest
        if final.exists():
            self._tmp.unlink()
        else:
            self._tmp.chmod(0o644)
            self._tmp.rename(final)
            self._created.append(final)
        return Descriptor(media_type, f"sha256:{hexdigest}", self.size, dict(annotations or {}))

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class LayerWriter:
    """Uncompressed tar bytes in; a gzip layer blob out, with the diff_id computed on the way."""

    def __init__(self, blob: BlobWriter) -> None:
        self._blob = blob
        self._diff = hashlib.sha256()
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        self.uncompressed_size = 0

    def write(self, data: bytes) -> int:
        self._diff.update(data)
        self.uncompressed_size += len(data)
        out = self._zlib.compress(data)
        if out:
            self._blob.write(out)
        return len(data)

    def finish(self, annotations: Mapping[str, str] | None = None) -> tuple[Descriptor, str]:
        self._blob.write(self._zlib.flush())
        descriptor = self._blob.commit(MEDIA_LAYER_GZIP, annotations)
        return descriptor, f"sha256:{self._diff.hexdigest()}"

    def abort(self) -> None:
        self._blob.abort()


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class TarStream:
    """Writes PAX tar entries with fixed header fields (mtime 0, no user/group names) to a sink.

    Data is buffered only up to COPY_CHUNK bytes, so a layer is never held in memory.
    """

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._buffer = bytearray()

    def _write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= COPY_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._sink.write(bytes(self._buffer))
            self._buffer.clear()

    def add(
        self,
        name: str,
        kind: bytes,
        *,
        mode: int,
        uid: int = 0,
        gid: int = 0,
        size: int = 0,
        linkname: str = "",
        pax: Mapping[str, str] | None = None,
        data: Iterable[bytes] = (),
    ) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode & 0o7777
        info.uid, info.gid = uid, gid
        info.size = size if kind == tarfile.REGTYPE else 0
        info.linkname = linkname
        info.mtime = 0
        info.uname = info.gname = ""
        if pax:
            info.pax_headers = dict(pax)
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        written = 0
        for chunk in data:
            written += len(chunk)
            self._write(chunk)
        if written != info.size:
            raise ValueError(f"{name}: expected {info.size} bytes of data, got {written}")
        if written % BLOCK:
            self._write(b"\0" * (BLOCK - written % BLOCK))

    def add_dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.add(name, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.add(name, tarfile.REGTYPE, mode=mode, size=len(data), data=(data,))

    def close(self) -> None:
        self._write(b"\0" * (2 * BLOCK))
        self.flush()


def read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            yield chunk


class OciLayoutWriter:
    """Adds blobs, a manifest and a tag to an OCI image layout directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.created: list[Path] = []  # blobs this writer added, removed again if the write fails
        layout = root / "oci-layout"
        if not layout.exists():
            _atomic_write(layout, canonical_json({"imageLayoutVersion": "1.0.0"}))

    def blob(self) -> BlobWriter:
        return BlobWriter(self.blob_dir, self.created)

    def add_blob(self, data: bytes, media_type: str) -> Descriptor:
        writer = self.blob()
        writer.write(data)
        return writer.commit(media_type)

    def layer(self) -> LayerWriter:
        return LayerWriter(self.blob())

    def add_manifest(
        self, config: bytes, layers: Sequence[Descriptor], annotations: Mapping[str, str]
    ) -> Descriptor:
        config_descriptor = self.add_blob(config, MEDIA_CONFIG)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_descriptor.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        return self.add_blob(canonical_json(manifest), MEDIA_MANIFEST)

    def tag(self, manifest: Descriptor, tag: str) -> None:
        """Point `tag` at `manifest` in index.json, keeping the other tags of an existing layout."""
        index_path = self.root / "index.json"
        entries: list[dict[str, Any]] = []
        if index_path.exists():
            try:
                old = json.loads(index_path.read_bytes())
                entries = [e for e in old.get("manifests", []) if isinstance(e, dict)]
            except (ValueError, AttributeError) as e:
                raise DestinationError(
                    f"{index_path} is not a valid OCI index", hint="write to a new directory"
                ) from e
            entries = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) != tag]
        entry = Descriptor(manifest.media_type, manifest.digest, manifest.size, {REF_NAME: tag}).to_json()
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [*entries, entry]}
        _atomic_write(index_path, canonical_json(index))

    def discard_created(self) -> None:
        for path in self.created:
            path.unlink(missing_ok=True)
        self.created.clear()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(name).chmod(0o644)
        Path(name).replace(path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_archive(layout: Path, archive: Path) -> None:
    """Tar an OCI layout into `archive` (deterministically), through a temporary file beside it."""
    fd, name = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            tar = TarStream(f)
            tar.add_bytes("oci-layout", (layout / "oci-layout").read_bytes())
            tar.add_bytes("index.json", (layout / "index.json").read_bytes())
            tar.add_dir("blobs/")
            tar.add_dir("blobs/sha256/")
            for blob in sorted((layout / "blobs" / "sha256").iterdir()):
                if blob.name.startswith("."):
                    continue
                size = blob.stat().st_size
                tar.add(
                    f"blobs/sha256/{blob.name}",
                    tarfile.REGTYPE,
                    mode=0o644,
                    size=size,
                    data=read_chunks(blob),
                )
            tar.close()
        tmp.chmod(0o644)
        tmp.rename(archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def open_destination(dest: Destination) -> Iterator[OciLayoutWriter]:
    """A layout writer for `dest`; the caller tags the image before leaving the block.

    On failure nothing is left behind: an oci: directory this call created is removed, blobs added to an
    existing layout are deleted again, and an oci-archive is never renamed into place.
    """
    if dest.transport is Transport.OCI_ARCHIVE:
        if not dest.path.parent.is_dir():
            raise DestinationError(f"directory {dest.path.parent} does not exist")
        with tempfile.TemporaryDirectory(prefix=f".{dest.path.name}.", dir=dest.path.parent) as tmp:
            staging = OciLayoutWriter(Path(tmp))
            yield staging
            write_archive(staging.root, dest.path)
        return
    created_dir = not dest.path.exists()
    if created_dir and not dest.path.parent.is_dir():
        raise DestinationError(f"directory {dest.path.parent} does not exist")
    writer: OciLayoutWriter | None = None
    try:
        writer = OciLayoutWriter(dest.path)
        yield writer
    except BaseException:
        if created_dir:
            shutil.rmtree(dest.path, ignore_errors=True)
        elif writer is not None:
            writer.discard_created()
        raise
