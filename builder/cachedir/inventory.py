"""What the cache holds (`imgbuild cache info`), and the facts `cache prune` decides on.

    <cache>/repo     the ostree repository: one image ref per imported image (ostree/container/image/...),
                     pointing at its merge commit, and one ref per imported layer (ostree/container/blob/...)
    <cache>/oci      the OCI blob cache (builder/source/cache.py): manifests, configs, layer blobs
    <cache>/stages   stage records (container.import: which commit an image's import made)
    <cache>/leases, used, lock   who uses what (builder/cachedir/locks.py)

Sizes are bytes on disk as `du -sb` counts them, each inode once: an object shared by two images counts once
in the total, in each image's `size`, and in no image's `exclusive` (what removing that image alone frees).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.cachedir import locks
from builder.cachedir.usage import Seen, files_size, tree_size
from builder.errors import ImgbuildError
from builder.ostree.gi import GLib, OSTree, open_repo
from builder.ostree.refescape import IMAGE_PREFIX, LAYER_PREFIX, escape_ref, unescape_ref
from builder.source import oci
from builder.source.cache import BlobCache

_EXTENSIONS = {
    OSTree.ObjectType.FILE: "file",
    OSTree.ObjectType.DIR_TREE: "dirtree",
    OSTree.ObjectType.DIR_META: "dirmeta",
    OSTree.ObjectType.COMMIT: "commit",
}


@dataclass(frozen=True)
class CachedImage:
    reference: str  # as imported (skopeo's form)
    ref: str  # its ostree ref
    commit: str
    manifest_digest: str | None
    blobs: tuple[str, ...]  # manifest, config and layer digests
    size: int  # its ostree objects and blobs
    exclusive: int  # of those, what no other image shares
    last_used: float | None
    in_use: tuple[int, ...]  # pids of the commands using it now


@dataclass(frozen=True)
class FetchedOnly:
    """A manifest in the blob cache that no imported image came from (`inspect`, an interrupted build)."""

    manifest_digest: str
    blobs: tuple[str, ...]
    size: int
    exclusive: int
    last_used: float | None  # the manifest blob's mtime
    in_use: tuple[int, ...]


@dataclass(frozen=True)
class Inventory:
    root: Path
    total: int  # du -sb of the whole cache
    parts: dict[str, int]  # top-level entry -> bytes (they add up to total)
    repo_mode: str | None
    images: tuple[CachedImage, ...]
    fetched: tuple[FetchedOnly, ...]
    layer_refs: int
    blob_count: int
    leases: tuple[locks.Lease, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "cache": str(self.root),
            "total": self.total,
            "parts": self.parts,
            "repo": {"path": str(self.root / "repo"), "mode": self.repo_mode, "layer_refs": self.layer_refs},
            "images": [
                {
                    "reference": i.reference,
                    "ref": i.ref,
                    "commit": i.commit,
                    "manifest_digest": i.manifest_digest,
                    "size": i.size,
                    "exclusive": i.exclusive,
                    "last_used": i.last_used,
                    "in_use": list(i.in_use),
                }
                for i in self.images
            ],
            "fetched": [
                {
                    "manifest_digest": f.manifest_digest,
                    "size": f.size,
                    "exclusive": f.exclusive,
                    "last_used": f.last_used,
                    "in_use": list(f.in_use),
                }
                for f in self.fetched
            ],
            "blobs": {"path": str(self.root / "oci"), "count": self.blob_count},
        }


def _object_paths(repo_path: Path, reachable: Any) -> set[Path]:
    paths = set()
    for key in reachable:
        checksum, objtype = key.unpack()
        ext = _EXTENSIONS.get(OSTree.ObjectType(objtype))
        if ext is None:
            continue
        base = repo_path / "objects" / checksum[:2] / checksum[2:]
        paths.add(base.with_suffix(f".{ext}"))
        if ext == "commit":
            paths.add(base.with_suffix(".commitmeta"))
    return paths


def _commit_meta(repo: Any, commit: str) -> dict[str, Any]:
    try:
        _, variant = repo.load_variant(OSTree.ObjectType.COMMIT, commit)
    except GLib.Error:
        return {}
    meta: dict[str, Any] = variant.get_child_value(0).unpack()
    return meta


def _manifest_blobs(manifest_text: str | bytes | None) -> tuple[str, ...]:
    if not manifest_text:
        return ()
    data = manifest_text.encode() if isinstance(manifest_text, str) else manifest_text
    try:
        manifest = oci.parse_manifest(data)
    except ImgbuildError:
        return ()
    return (manifest.config.digest, *(layer.digest for layer in manifest.layers))


def _reach(repo: Any, commit: str) -> Any:
    try:
        _, reachable = repo.traverse_commit(commit, -1, None)
    except GLib.Error:
        return {}
    return reachable


@dataclass(frozen=True)
class _Found:
    reference: str
    ref: str
    commit: str
    manifest_digest: str | None
    blobs: tuple[str, ...]
    objects: frozenset[Path]


def _repo_images(repo_path: Path) -> tuple[list[_Found], int, str | None]:
    """Each image ref with what it reaches (its merge commit and its layers' commits); layer refs counted."""
    if not (repo_path / "config").is_file():
        return [], 0, None
    repo = open_repo(repo_path)
    _, refs = repo.list_refs(None, None)
    layer_commits = {name: rev for name, rev in refs.items() if name.startswith(f"{LAYER_PREFIX}/")}
    found = []
    for name, commit in sorted(refs.items()):
        if not name.startswith(f"{IMAGE_PREFIX}/"):
            continue
        meta = _commit_meta(repo, commit)
        digest = meta.get("ostree.manifest-digest")
        blobs = _manifest_blobs(meta.get("ostree.manifest"))
        objects = _object_paths(repo_path, _reach(repo, commit))
        for layer in blobs[1:]:
            layer_commit = layer_commits.get(f"{LAYER_PREFIX}/{escape_ref(layer)}")
            if layer_commit is not None:
                objects |= _object_paths(repo_path, _reach(repo, layer_commit))
        reference = unescape_ref(name.removeprefix(f"{IMAGE_PREFIX}/"))
        manifest_blobs = ((digest,) if isinstance(digest, str) else ()) + blobs
        found.append(
            _Found(
                reference,
                name,
                commit,
                digest if isinstance(digest, str) else None,
                manifest_blobs,
                frozenset(objects),
            )
        )
    mode = {OSTree.RepoMode.BARE: "bare", OSTree.RepoMode.BARE_USER: "bare-user"}.get(
        repo.get_mode(), "other"
    )
    return found, len(layer_commits), mode


def _ref_mtime(repo_path: Path, ref: str) -> float | None:
    """When the ref was written: the last use of an image imported before uses were recorded."""
    try:
        return (repo_path / "refs" / "heads" / ref).stat().st_mtime
    except FileNotFoundError:
        return None


def cached_manifests(store: BlobCache) -> dict[str, tuple[str, ...]]:
    """Manifest digest -> the blobs it names (itself first), for every manifest index.json lists."""
    try:
        index = json.loads((store.root / "index.json").read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    result: dict[str, tuple[str, ...]] = {}
    for entry in index.get("manifests", []):
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(digest, str):
            continue
        try:
            data = store.read_small(digest, oci.MAX_DOCUMENT)
        except ValueError:
            data = None
        result[digest] = (digest, *_manifest_blobs(data))
    return result


def _pids(leases: list[locks.Lease], ref: str | None, digest: str | None) -> tuple[int, ...]:
    return tuple(
        sorted(
            {
                lease.pid
                for lease in leases
                if (ref and lease.image_ref == ref) or (digest and lease.digest == digest)
            }
        )
    )


def take(cache: Path, *, remove_stale_leases: bool = False) -> Inventory:
    store = BlobCache(cache / "oci")
    leases = locks.live_leases(cache, remove_stale=remove_stale_leases)
    found, layer_refs, mode = _repo_images(cache / "repo")
    manifests = cached_manifests(store)
    imported_digests = {f.manifest_digest for f in found}
    fetched_only = {d: blobs for d, blobs in manifests.items() if d not in imported_digests}

    def blob_paths(digests: tuple[str, ...]) -> set[Path]:
        return {store.blob_path(d) for d in digests}

    # What each entry holds, as paths; an entry's exclusive bytes are the paths no other entry holds.
    holdings: list[set[Path]] = [set(f.objects) | blob_paths(f.blobs) for f in found]
    holdings += [blob_paths(blobs) for blobs in fetched_only.values()]
    counts: dict[Path, int] = {}
    for held in holdings:
        for path in held:
            counts[path] = counts.get(path, 0) + 1

    def sizes(held: set[Path]) -> tuple[int, int]:
        return files_size(held), files_size(p for p in held if counts[p] == 1)

    images = []
    for f, held in zip(found, holdings, strict=False):
        size, exclusive = sizes(held)
        images.append(
            CachedImage(
                reference=f.reference,
                ref=f.ref,
                commit=f.commit,
                manifest_digest=f.manifest_digest,
                blobs=f.blobs,
                size=size,
                exclusive=exclusive,
                last_used=locks.last_used(cache, f.ref) or _ref_mtime(cache / "repo", f.ref),
                in_use=_pids(leases, f.ref, f.manifest_digest),
            )
        )
    fetched = []
    for (digest, blobs), held in zip(fetched_only.items(), holdings[len(found) :], strict=True):
        size, exclusive = sizes(held)
        try:
            mtime: float | None = store.blob_path(digest).stat().st_mtime
        except FileNotFoundError:
            mtime = None
        fetched.append(FetchedOnly(digest, blobs, size, exclusive, mtime, _pids(leases, None, digest)))

    seen: Seen = set()
    parts: dict[str, int] = {}
    total = tree_size(cache, seen=set()) if cache.exists() else 0
    if cache.is_dir():
        parts["(directory)"] = files_size([cache], seen)
        for entry in sorted(cache.iterdir()):
            parts[entry.name] = tree_size(entry, seen)
    blob_dir = store.blob_dir / "sha256"
    blob_count = sum(1 for _ in blob_dir.iterdir()) if blob_dir.is_dir() else 0
    return Inventory(
        root=cache,
        total=total,
        parts=parts,
        repo_mode=mode,
        images=tuple(images),
        fetched=tuple(fetched),
        layer_refs=layer_refs,
        blob_count=blob_count,
        leases=tuple(leases),
    )
