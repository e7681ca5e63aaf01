"""Import an ostree-native container image into an ostree repository (what `ostree container image pull`
does in ostree-ext, which Debian's libostree 2022.7 lacks).

Order, as ostree-ext: chunk layers (object sets), then the commit layer, then the derived layers, then the
merge commit. Every layer is read once, as a stream, through `open_layer`, which verifies the blob's digest,
size and diff_id; a layer's ref (`ostree/container/blob/<escaped digest>`) is written only after that
verification passed, so an interrupted or corrupt import leaves no ref to a partial commit. A layer whose
ref already exists is not read again: that is how an update reuses the layers it shares with what was
imported before (and with what a booted bootc/rpm-ostree imported).

The repository is created `bare` as root, `bare-user` otherwise; an existing repository of either mode
is used as it is, and both give the same merge commit. Each layer is its own transaction; the refs of the
ostree layers are written together after one sync of the filesystem (a repository with
`core.fsync=false` skips that; see `_import_ostree_layers`). Derived layers' `/var`
content lands in `usr/share/factory/var` (see derived.py: this libostree does not seed /var).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import ImportFailure
from builder.ostree import allocator, derived, merge, tarimport
from builder.ostree.gi import GLib, OSTree, create_repo
from builder.ostree.refescape import image_ref, layer_ref
from builder.ostree.remotes import OstreeRemote
from builder.ostree.signature import SignatureCheck, verify_image_commit
from builder.source.image import Image, Layer, LayerRole, Layout
from builder.source.verify import open_layer

log = logging.getLogger(__name__)

FILTERED_KEY = "ostree.tar-filtered"


@dataclass(frozen=True)
class ImportResult:
    merge_commit: str  # the commit to deploy: base + derived layers + the image's metadata
    base_commit: str | None  # the image's ostree commit (its `ostree.commit` label); None for a bootc image
    image_ref: str  # the ostree ref written for the image
    imported_layers: tuple[str, ...]  # layer digests read from the image this time
    reused_layers: tuple[str, ...]  # layer digests already in the repository
    filtered: Mapping[str, Mapping[str, int]]  # derived layer digest -> top level -> entries dropped
    signature: SignatureCheck | None = None  # the commit's signature, when an ostree remote verified it
    # Wall seconds of each phase: "ostree layers" (read, verify, write, sync), "derived layers", "merge".
    phases: tuple[tuple[str, float], ...] = ()


def open_or_create_repo(path: Path) -> Any:
    """The repository at `path`, created if missing: `bare` as root, `bare-user` otherwise."""
    mode = OSTree.RepoMode.BARE if os.geteuid() == 0 else OSTree.RepoMode.BARE_USER
    try:
        return create_repo(path, mode)
    except GLib.Error as e:
        raise ImportFailure(f"cannot open or create the ostree repository {path}: {e.message}") from None


def _resolve(repo: Any, ref: str) -> str | None:
    _, rev = repo.resolve_rev(ref, True)
    return str(rev) if rev else None


def _complete(repo: Any, commit: str, *, partial_ok: bool = False) -> bool:
    """The commit is present, not marked partial, and every object it reaches is in the repository."""
    try:
        _, _, state = repo.load_commit(commit)
        if state & OSTree.RepoCommitState.PARTIAL and not partial_ok:
            return False
        _, reachable = repo.traverse_commit(commit, 0, None)
    except GLib.Error:
        return False
    for key in reachable:
        name, objtype = key.unpack()
        if not repo.has_object(objtype, name, None)[1]:
            return False
    return True


OnBytes = Callable[[int, int], None]  # (bytes of layer blobs read or reused so far, bytes of all layers)


class _Importer:
    def __init__(self, image: Image, repo_path: Path, repo: Any, on_bytes: OnBytes | None) -> None:
        self.image = image
        self.repo_path = repo_path
        self.repo = repo
        self.imported: list[str] = []
        self.reused: list[str] = []
        self.on_bytes = on_bytes
        self.total = sum(layer.size for layer in image.layers)
        self.done = 0  # bytes of the layers finished
        # Refs of the ostree layers imported, written together by `write_refs` after one sync.
        self.pending_refs: list[tuple[str, str]] = []

    def write_refs(self) -> None:
        """One sync of the repository's filesystem, then the refs: every object the refs reach is on disk
        before they are. (A transaction would sync too, but libostree 2022.7's commit also fsyncs each of
        the 256 `objects/XX` directories after the syncfs, which already wrote them: ~0.8 s for nothing
        on a loaded disk.) Each ref is written as libostree writes it (its data synced, then renamed)."""
        if not self.pending_refs:
            return
        if not self.repo.get_disable_fsync():
            tarimport.syncfs(self.repo_path)
        for ref, commit in self.pending_refs:
            self.repo.set_ref_immediate(None, ref, commit, None)
        self.pending_refs.clear()

    def layer_done(self, layer: Layer) -> None:
        self.done += layer.size
        if self.on_bytes is not None:
            self.on_bytes(self.done, self.total)

    def on_read(self) -> Callable[[int], None] | None:
        report, done, total = self.on_bytes, self.done, self.total
        if report is None:
            return None
        return lambda count: report(done + count, total)

    def present(self, layer: Layer) -> str | None:
        """The commit recording `layer`, if a previous import completed it."""
        commit = _resolve(self.repo, layer_ref(layer.digest))
        if commit is None:
            return None
        if layer.role is LayerRole.OSTREE_COMMIT and commit != self.image.ostree_commit:
            return None  # a ref from something else; import again (and repoint it)
        if not _complete(self.repo, commit):
            return None
        self.reused.append(layer.digest)
        return commit

    def chunk(self, layer: Layer) -> None:
        if self.present(layer):
            return
        with tarimport.transaction(self.repo):
            with open_layer(self.image, layer, self.on_read()) as stream:
                stats = tarimport.import_layer_objects(
                    self.repo, stream, layer=layer.digest, commit_layer=False
                )
            commit = tarimport.write_object_set_commit(self.repo, stats.content_objects)
            self.pending_refs.append((layer_ref(layer.digest), commit))
        log.info("layer %s: %d objects (%d new)", layer.digest, len(stats.content_objects), stats.written)
        self.imported.append(layer.digest)

    def commit_layer(self, layer: Layer) -> str:
        existing = self.present(layer)
        if existing:
            return existing
        expected = self.image.ostree_commit
        commit: str | None = None
        try:
            with tarimport.transaction(self.repo):
                with open_layer(self.image, layer, self.on_read()) as stream:
                    stats = tarimport.import_layer_objects(
                        self.repo, stream, layer=layer.digest, commit_layer=True, expected_commit=expected
                    )
                    commit = stats.commit
        except BaseException:
            # The stream failed verification after its objects were read: they were discarded with the
            # transaction, and so must the partial marker be.
            if commit is not None:
                self.repo.mark_commit_partial(commit, False)
            raise
        assert commit is not None
        if not _complete(self.repo, commit, partial_ok=True):
            raise ImportFailure(
                f"layer {layer.digest}: the commit {commit} references objects no layer of the image carries",
                hint="the image is incomplete or its layers do not belong together",
            )
        self.repo.mark_commit_partial(commit, False)
        self.pending_refs.append((layer_ref(layer.digest), commit))
        log.info("layer %s: commit %s, %d objects", layer.digest, commit, stats.metadata_objects)
        self.imported.append(layer.digest)
        return commit

    def derived(self, layer: Layer, base: str | None) -> tuple[str, dict[str, int]]:
        existing = self.present(layer)
        if existing:
            return existing, self.recorded_filtered(existing)
        config = derived.FilterConfig(
            allow_nonusr=base is None,
            # libostree >= 2024.3 seeds /var from the commit; older ones (Debian's 2022.7) do not.
            remap_factory_var=not OSTree.check_version(2024, 3),
        )
        with tempfile.TemporaryDirectory(dir=self.repo_path / "tmp", prefix="layer-") as tmp:
            with open_layer(self.image, layer, self.on_read()) as stream:
                result = derived.commit_derived_layer(
                    self.repo_path, stream, layer=layer.digest, config=config, tmpdir=Path(tmp)
                )
        # The counts are known only once the layer has been read: keep them beside the commit (detached
        # metadata), so that importing the image again writes the same merge commit.
        counts = {name: int(n) for name, n in result.filtered.items()}
        detached = GLib.Variant("a{sv}", {FILTERED_KEY: GLib.Variant("a{su}", counts)})
        self.repo.write_commit_detached_metadata(result.commit, detached, None)
        self.repo.set_ref_immediate(None, layer_ref(layer.digest), result.commit, None)
        self.imported.append(layer.digest)
        return result.commit, counts

    def recorded_filtered(self, commit: str) -> dict[str, int]:
        _, detached = self.repo.read_commit_detached_metadata(commit, None)
        value = detached.lookup_value(FILTERED_KEY, None) if detached is not None else None
        return dict(value.unpack()) if value is not None else {}


def _import_ostree_layers(importer: _Importer) -> str:
    """Chunk layers, then the commit layer; returns the commit.

    Each layer is its own transaction, committed without a sync: the refs are written at the end in one
    batch after one syncfs (one sync instead of one per layer; an image has up to 64 layers, and
    each syncfs also waits for whatever else the machine wrote). Layers completed before a failure or an
    interruption keep their refs, so the next attempt reuses them.
    """
    repo = importer.repo
    fsync_disabled = repo.get_disable_fsync()
    repo.set_disable_fsync(True)
    try:
        for layer in importer.image.layers_with(LayerRole.OSTREE_CHUNK):
            importer.chunk(layer)
            importer.layer_done(layer)
        (commit_layer,) = importer.image.layers_with(LayerRole.OSTREE_COMMIT)
        base = importer.commit_layer(commit_layer)
        importer.layer_done(commit_layer)
    except BaseException as error:
        repo.set_disable_fsync(fsync_disabled)
        try:
            importer.write_refs()
        except (GLib.Error, OSError) as e:
            error.add_note(f"writing the refs of the layers imported before this failed too: {e}")
        raise
    repo.set_disable_fsync(fsync_disabled)
    importer.write_refs()
    return base


def import_image(
    image: Image,
    repo: Path,
    *,
    imgref: str,
    remote: OstreeRemote | None = None,
    shown: str | None = None,
    on_bytes: OnBytes | None = None,
) -> ImportResult:
    """Import `image` into the ostree repository `repo` (created if missing); see the module doc.

    With `remote`, the commit's signature is verified against the remote's keys first: a refusal leaves
    the repository untouched (not even created). `shown` names the image in that refusal.
    `on_bytes(done, total)` hears the progress in bytes of layer blobs (reused layers count as done).
    """
    allocator.keep_buffers_mapped()
    signature = None
    if remote is not None:
        signature = verify_image_commit(image, remote, reference=shown or imgref)
    ostree_repo = open_or_create_repo(repo)
    (repo / "tmp").mkdir(exist_ok=True)
    importer = _Importer(image, repo, ostree_repo, on_bytes)
    phases: list[tuple[str, float]] = []
    t0 = time.monotonic()
    base: str | None = None
    if image.layout is not Layout.BOOTC:
        if image.ostree_commit is None:
            raise ImportFailure(
                f"{image.reference}: its layers carry an ostree commit but it has no ostree.commit label",
                hint="the image was not written by ostree-ext or rpm-ostree",
            )
        base = _import_ostree_layers(importer)
        phases.append(("ostree layers", time.monotonic() - t0))
        t0 = time.monotonic()
    layer_commits: list[str] = []
    filtered: dict[str, dict[str, int]] = {}
    for layer in image.layers_with(LayerRole.DERIVED):
        commit, counts = importer.derived(layer, base)
        importer.layer_done(layer)
        layer_commits.append(commit)
        if counts:
            filtered[layer.digest] = counts
    if layer_commits:
        phases.append(("derived layers", time.monotonic() - t0))
        t0 = time.monotonic()
    ref = image_ref(imgref)
    meta = merge.MergeMetadata(
        manifest_digest=image.manifest_digest,
        manifest=image.manifest,
        config=image.config,
        filtered=filtered,
        timestamp=merge.image_timestamp(image.manifest, image.config),
        version=image.labels.get("org.opencontainers.image.version") or image.labels.get("version"),
    )
    merged = merge.write_merge_commit(ostree_repo, repo, base=base, layers=layer_commits, meta=meta, ref=ref)
    phases.append(("merge", time.monotonic() - t0))
    return ImportResult(
        merge_commit=merged,
        base_commit=base,
        image_ref=ref,
        imported_layers=tuple(importer.imported),
        reused_layers=tuple(importer.reused),
        filtered=filtered,
        signature=signature,
        phases=tuple(phases),
    )
