"""The merge commit: the base ostree commit plus the derived layers, with the container metadata.

This is what gets deployed (research/ostree.md §1.4 step 3). It is always made, also without derived
layers, so that the image's manifest and config travel with the commit and bootc/rpm-ostree recognise it.

- No derived layers: a new commit of the base's own root tree (no checkout at all), so every SELinux
  label, owner and xattr is the commit's own.
- Derived layers: check the base out under the repository's tmp (hardlinks, devino cache), check each
  layer out on top with whiteouts processed, then write the directory back; when the merged tree has an
  SELinux policy, everything is relabelled from it (files the layers add would otherwise carry no label).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builder import __version__
from builder.errors import ImportFailure
from builder.ostree.gi import Gio, GLib, OSTree
from builder.ostree.tarimport import syncfs, transaction


@dataclass(frozen=True)
class MergeMetadata:
    manifest_digest: str
    manifest: bytes
    config: bytes
    filtered: Mapping[str, Mapping[str, int]]  # layer digest -> top level -> entries dropped
    timestamp: int
    version: str | None = None  # the image's version label, shown by `ostree admin status` and bootc


def image_timestamp(manifest: bytes, config: bytes) -> int:
    """org.opencontainers.image.created from the manifest, else the config's created, else now."""
    candidates: list[Any] = []
    try:
        candidates.append(json.loads(manifest).get("annotations", {}).get("org.opencontainers.image.created"))
        candidates.append(json.loads(config).get("created"))
    except (ValueError, AttributeError):
        pass
    for text in candidates:
        if isinstance(text, str) and text:
            try:
                created = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                continue
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            return int(created.timestamp())
    return int(datetime.now(UTC).timestamp())


def _metadata_variant(meta: MergeMetadata) -> Any:
    filtered = {layer: {k: int(n) for k, n in counts.items()} for layer, counts in meta.filtered.items()}
    entries = {
        "ostree.manifest-digest": GLib.Variant("s", meta.manifest_digest),
        "ostree.manifest": GLib.Variant("s", meta.manifest.decode("utf-8")),
        "ostree.container.image-config": GLib.Variant("s", meta.config.decode("utf-8")),
        "ostree.importer.version": GLib.Variant("s", f"imgbuild {__version__}"),
        "ostree.tar-filtered": GLib.Variant("a{sa{su}}", {k: v for k, v in filtered.items() if v}),
    }
    if meta.version:
        entries["version"] = GLib.Variant("s", meta.version)
    return GLib.Variant("a{sv}", entries)


def _checkout_options(bare: bool, devino: Any, *, whiteouts: bool) -> Any:
    opts = OSTree.RepoCheckoutAtOptions()
    opts.mode = OSTree.RepoCheckoutMode.NONE if bare else OSTree.RepoCheckoutMode.USER
    opts.overwrite_mode = OSTree.RepoCheckoutOverwriteMode.UNION_FILES
    opts.no_copy_fallback = True
    opts.force_copy_zerosized = True
    opts.process_whiteouts = whiteouts
    opts.set_devino(devino)
    return opts


def _replace_non_directories(repo: Any, layer: str, rootfd: int) -> None:
    """Where `layer` has a directory and the tree checked out so far has anything else, remove that.

    libostree's union checkout follows a symlink it finds where the layer has a directory, so a layer
    could write through a symlink of an earlier layer (or of the base) to anywhere on the host. In a
    container (overlayfs) the upper layer's directory replaces the lower non-directory: do that first.
    """
    _, commitv, _ = repo.load_commit(layer)
    tree = OSTree.checksum_from_bytes(commitv.get_child_value(6).get_data_as_bytes().get_data())
    _walk_layer_dirs(repo, tree, rootfd)


def _walk_layer_dirs(repo: Any, tree: str, dirfd: int) -> None:
    _, treev = repo.load_variant(OSTree.ObjectType.DIR_TREE, tree)
    dirs = treev.get_child_value(1)
    for i in range(dirs.n_children()):
        name, subtree, _meta = dirs.get_child_value(i).unpack()
        try:
            st = os.lstat(name, dir_fd=dirfd)
        except FileNotFoundError:
            continue  # the checkout creates it; nothing can be below it yet
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dirfd)
            continue
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
        try:
            _walk_layer_dirs(repo, bytes(subtree).hex(), fd)
        finally:
            os.close(fd)


class _FromCommits:
    """Ownership, mode and xattrs of each path as the commit it was checked out from records them: for a
    file the topmost commit that has it, for a directory the lowest (a union checkout keeps an existing
    directory as it is, which is also what a bare repository's checkout gives).

    A bare-user repository's checkout (mode USER) cannot reproduce those on disk: symlinks and directories
    get no xattrs, everything belongs to the user running the import, setuid bits are dropped. Reading
    them back would lose e.g. the base's SELinux labels there. Only used for bare-user repositories.
    """

    def __init__(self, repo: Any, commits_top_first: Sequence[str]) -> None:
        self.roots = [repo.read_commit(c, None)[1] for c in commits_top_first]
        self.empty = GLib.Variant("a(ayay)", [])

    def _source(self, path: str, info: Any) -> Any | None:
        rel = path.strip("/")
        is_dir = info.get_file_type() == Gio.FileType.DIRECTORY
        for root in reversed(self.roots) if is_dir else self.roots:
            node = root.resolve_relative_path(rel) if rel else root
            try:
                node.ensure_resolved()
                node.query_info("unix::mode", Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None)
            except GLib.Error:
                continue  # not in this commit
            return node
        return None

    def filter(self, repo: Any, path: str, info: Any, *user_data: Any) -> Any:
        node = self._source(path, info)
        if node is not None:
            known = node.query_info("unix::*", Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None)
            for key in ("unix::uid", "unix::gid", "unix::mode"):
                info.set_attribute_uint32(key, known.get_attribute_uint32(key))
        return OSTree.RepoCommitFilterResult.ALLOW

    def xattrs(self, repo: Any, path: str, info: Any, *user_data: Any) -> Any:
        node = self._source(path, info)
        if node is None:
            return self.empty
        _, xattrs = node.get_xattrs(None)
        return xattrs if xattrs is not None else self.empty


def _merged_root(repo: Any, base: str | None, layers: Sequence[str], workdir: Path) -> Any:
    """Check out base + layers into `workdir/root` and write it back into a tree; returns the root."""
    bare = repo.get_mode() == OSTree.RepoMode.BARE
    devino = OSTree.RepoDevInoCache.new()
    dfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if base is not None:
            repo.checkout_at(_checkout_options(bare, devino, whiteouts=False), dfd, "root", base, None)
        else:
            os.mkdir("root", 0o755, dir_fd=dfd)
        for layer in layers:
            rootfd = os.open("root", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                _replace_non_directories(repo, layer, rootfd)
            finally:
                os.close(rootfd)
            repo.checkout_at(_checkout_options(bare, devino, whiteouts=True), dfd, "root", layer, None)
        rootfd = os.open("root", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
        try:
            policy = OSTree.SePolicy.new_at(rootfd, None)
            flags = OSTree.RepoCommitModifierFlags.CONSUME
            if bare:
                modifier = OSTree.RepoCommitModifier.new(flags, None)
            else:
                source = _FromCommits(repo, [*reversed(layers), *([base] if base is not None else [])])
                modifier = OSTree.RepoCommitModifier.new(flags, source.filter)
                modifier.set_xattr_callback(source.xattrs)
            modifier.set_devino_cache(devino)
            if policy.get_name():
                modifier.set_sepolicy(policy)
            mtree = OSTree.MutableTree.new()
            repo.write_dfd_to_mtree(rootfd, ".", mtree, modifier, None)
            _, root = repo.write_mtree(mtree, None)
            return root
        finally:
            os.close(rootfd)
    finally:
        os.close(dfd)


def write_merge_commit(
    repo: Any, repo_path: Path, *, base: str | None, layers: Sequence[str], meta: MergeMetadata, ref: str
) -> str:
    """Write the merge commit and point `ref` at it; returns its checksum.

    The objects are written without a sync; one syncfs then puts them on disk before the ref (a
    transaction with fsync would also fsync all 256 `objects/XX` directories after its syncfs)."""
    metadata = _metadata_variant(meta)
    fsync = not repo.get_disable_fsync()
    repo.set_disable_fsync(True)
    try:
        with ExitStack() as stack:
            try:
                if layers:
                    tmp = repo_path / "tmp"
                    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=tmp, prefix="merge-")))
                    stack.enter_context(transaction(repo))
                    root = _merged_root(repo, base, layers, workdir)
                else:
                    if base is None:
                        raise ImportFailure("the image has neither an ostree commit nor layers")
                    stack.enter_context(transaction(repo))
                    _, root, _ = repo.read_commit(base, None)
                _, commit = repo.write_commit_with_time(
                    base, None, None, metadata, root, meta.timestamp, None
                )
            except GLib.Error as e:
                raise ImportFailure(
                    f"merging the layers failed: {e.message}",
                    hint="a derived layer conflicts with the base tree (for example a file where a "
                    "directory is expected)",
                ) from None
    finally:
        repo.set_disable_fsync(not fsync)
    if fsync:
        syncfs(repo_path)
    repo.set_ref_immediate(None, ref, commit, None)
    return str(commit)
