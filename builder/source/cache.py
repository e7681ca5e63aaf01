"""The content-addressed blob cache: one OCI image layout shared by every image fetched.

    <root>/oci-layout, index.json, blobs/sha256/<hex>    the OCI layout skopeo writes into
    <root>/imgbuild/verified/<hex>                        a blob that passed verification (size, mtime)
    <root>/imgbuild/resolved/<key>                        source manifest (+arch) -> cached manifest digest

A blob's name is its digest, so a blob present is never fetched again (skopeo reuses it); whether it is
*right* is recorded separately, once it has been hashed, so it is never hashed twice either. A blob that
fails verification is removed, so the next fetch replaces it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from builder import paths

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_STATE = "imgbuild"


def default_root() -> Path:
    return paths.cache_dir() / "oci"


def split_digest(digest: str) -> tuple[str, str]:
    """("sha256", hex) of a well-formed digest; ValueError otherwise (the caller names the culprit)."""
    if not _DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    algorithm, _, hexdigest = digest.partition(":")
    return algorithm, hexdigest


def write_atomically(path: Path, data: bytes) -> None:
    """Write beside the final name, then rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class BlobCache:
    root: Path

    @classmethod
    def for_blob_dir(cls, blob_dir: Path) -> BlobCache | None:
        """The cache that owns `blob_dir` (an Image's), or None for a plain OCI layout."""
        root = blob_dir.parent
        return cls(root) if (root / _STATE).is_dir() else None

    @property
    def blob_dir(self) -> Path:
        return self.root / "blobs"

    def create(self) -> None:
        (self.blob_dir / "sha256").mkdir(parents=True, exist_ok=True)
        for sub in ("verified", "resolved"):
            (self.root / _STATE / sub).mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            write_atomically(layout, json.dumps({"imageLayoutVersion": "1.0.0"}).encode())

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the layout: skopeo rewrites index.json, so two copies must not overlap."""
        self.create()
        with open(self.root / _STATE / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def blob_path(self, digest: str) -> Path:
        algorithm, hexdigest = split_digest(digest)
        return self.blob_dir / algorithm / hexdigest

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_small(self, digest: str, limit: int) -> bytes | None:
        """A manifest or config blob, or None when absent; refuses blobs above `limit` bytes."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise ValueError(f"{digest} is larger than {limit} bytes")
        return data

    def discard(self, digest: str) -> None:
        """Remove a blob that failed verification, and any record of it."""
        _, hexdigest = split_digest(digest)
        self.blob_path(digest).unlink(missing_ok=True)
        (self.root / _STATE / "verified" / hexdigest).unlink(missing_ok=True)

    # A stamp ties the record to the file as it was hashed: a blob rewritten since is hashed again.
    def _stamp(self, digest: str, diff_id: str) -> str | None:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return None
        return f"{digest} {diff_id} {st.st_size} {st.st_mtime_ns} {st.st_ino}\n"

    def is_verified(self, digest: str, diff_id: str) -> bool:
        _, hexdigest = split_digest(digest)
        stamp = self._stamp(digest, diff_id)
        try:
            return stamp is not None and (self.root / _STATE / "verified" / hexdigest).read_text() == stamp
        except FileNotFoundError:
            return False

    def mark_verified(self, digest: str, diff_id: str) -> None:
        _, hexdigest = split_digest(digest)
        stamp = self._stamp(digest, diff_id)
        if stamp is not None:
            write_atomically(self.root / _STATE / "verified" / hexdigest, stamp.encode())

    def resolved(self, key: str) -> str | None:
        """The cached manifest a source manifest was copied to (they differ when skopeo converted it).

        `key` is the source manifest's hex digest, followed by "-<arch>" when it is an index.
        """
        try:
            digest = (self.root / _STATE / "resolved" / _safe_key(key)).read_text().strip()
        except FileNotFoundError:
            return None
        return digest if _DIGEST_RE.fullmatch(digest) else None

    def remember(self, key: str, cached_digest: str) -> None:
        split_digest(cached_digest)
        write_atomically(self.root / _STATE / "resolved" / _safe_key(key), f"{cached_digest}\n".encode())


def _safe_key(key: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}(?:-[a-z0-9_]+)?", key):
        raise ValueError(f"not a cache key: {key!r}")
    return key
