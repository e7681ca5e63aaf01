"""`imgbuild cache prune`: remove the images nobody uses (all of them, or all but the N used last).

Under the cache lock held exclusively (builder/cachedir/locks.py), so no fetch or import is half-way:
1. read the live leases (stale ones removed) and the inventory; an image a lease names is kept, whatever
   was asked;
2. delete the removed images' refs, and every layer ref no kept image names (also those an interrupted
   import left), then `ostree prune --refs-only`: the objects no remaining ref reaches. Nothing unreferenced
   belongs to a running import, since imports hold the lock shared;
3. delete the blobs no kept image or kept fetched manifest names, their records, their index.json entries,
   and the stage records whose commit is gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.cachedir import inventory, locks
from builder.cachedir.inventory import CachedImage, FetchedOnly, Inventory
from builder.ostree.gi import OSTree, open_repo
from builder.ostree.refescape import LAYER_PREFIX, escape_ref
from builder.ostree.repoquery import has_commit
from builder.source.cache import BlobCache, write_atomically

Entry = CachedImage | FetchedOnly


@dataclass(frozen=True)
class Decision:
    remove: tuple[Entry, ...]
    keep: tuple[Entry, ...]
    in_use: tuple[Entry, ...]  # kept because a running command uses them

    @property
    def estimate(self) -> int:
        """Bytes freed, at least: what only the removed entries hold (shared objects among them add more)."""
        return sum(e.exclusive for e in self.remove)


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    before: int
    after: int
    objects_pruned: int


def decide(inv: Inventory, keep_last: int | None) -> Decision:
    """Most recently used first; the first `keep_last` are kept (None: keep none); leased ones always."""
    entries: list[Entry] = [*inv.images, *inv.fetched]
    entries.sort(key=lambda e: e.last_used or 0.0, reverse=True)
    wanted = entries[: keep_last or 0]
    in_use = [e for e in entries if e.in_use]
    keep = [e for e in entries if e in wanted or e.in_use]
    remove = [e for e in entries if e not in keep]
    return Decision(tuple(remove), tuple(keep), tuple(in_use))


def _prune_repo(repo_path: Path, decision: Decision) -> int:
    if not (repo_path / "config").is_file():
        return 0
    repo = open_repo(repo_path)
    kept_layers = {escape_ref(d) for e in decision.keep for d in e.blobs}
    _, refs = repo.list_refs(None, None)
    removed_refs = {e.ref for e in decision.remove if isinstance(e, CachedImage)}
    for name in refs:
        layer = name.removeprefix(f"{LAYER_PREFIX}/")
        if name in removed_refs or (layer != name and layer not in kept_layers):
            repo.set_ref_immediate(None, name, None, None)
    _, _, pruned, _ = repo.prune(OSTree.RepoPruneFlags.REFS_ONLY, -1, None)
    return int(pruned)


def _prune_blobs(store: BlobCache, kept: set[str]) -> None:
    kept_hex = {d.partition(":")[2] for d in kept}
    if not store.root.is_dir():
        return
    with store.locked():
        index_path = store.root / "index.json"
        try:
            index = json.loads(index_path.read_bytes())
        except (FileNotFoundError, json.JSONDecodeError):
            index = None
        if isinstance(index, dict):
            manifests = [m for m in index.get("manifests", []) if m.get("digest") in kept]
            if manifests != index.get("manifests"):
                write_atomically(index_path, json.dumps({**index, "manifests": manifests}).encode())
        for blob in (store.blob_dir / "sha256").glob("*"):
            if blob.name not in kept_hex:
                blob.unlink(missing_ok=True)
        state = store.root / "imgbuild"
        for record in (state / "verified").glob("*"):
            if record.name not in kept_hex:
                record.unlink(missing_ok=True)
        for record in (state / "resolved").glob("*"):
            try:
                target = record.read_text().strip()
            except FileNotFoundError:
                continue
            if target not in kept:
                record.unlink(missing_ok=True)


def _prune_records(cache: Path) -> None:
    """container.import records whose commit is gone (the import would be redone anyway)."""
    repo = cache / "repo"
    for path in (cache / "stages").glob("*.json"):
        try:
            commit = json.loads(path.read_bytes()).get("commit")
        except (FileNotFoundError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(commit, str) and not has_commit(repo, commit):
            path.unlink(missing_ok=True)


def prune(
    cache: Path, keep_last: int | None, *, dry_run: bool, on_wait: Callable[[], None] | None = None
) -> Outcome:
    if not cache.is_dir():
        empty = Decision((), (), ())
        return Outcome(empty, 0, 0, 0)
    with locks.pruning(cache, on_wait):
        inv = inventory.take(cache, remove_stale_leases=not dry_run)
        decision = decide(inv, keep_last)
        if dry_run:
            return Outcome(decision, inv.total, inv.total - decision.estimate, 0)
        pruned = _prune_repo(cache / "repo", decision)
        _prune_blobs(BlobCache(cache / "oci"), {d for e in decision.keep for d in e.blobs})
        _prune_records(cache)
        for entry in decision.remove:
            if isinstance(entry, CachedImage):
                locks.forget(cache, entry.ref)
        after = inventory.take(cache).total
    return Outcome(decision, inv.total, after, pruned)
