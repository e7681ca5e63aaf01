"""Import the ostree layers of an ostree-native container (ostree-ext's tar format) into a repository.

The layers hold ostree objects under `sysroot/ostree/repo/objects/` (research/ostree.md §1.3). Two tar
layouts exist and both are read here:
- v1 (current): xattrs in `objects/XX/Y.file-xattrs` (named by the sha256 of the serialized `a(ayay)`),
  attached to the next content object by `objects/<csum>.file-xattrs-link`; paths without `./`.
- v0 (legacy, 2021-2022): xattrs in `sysroot/ostree/repo/xattrs/<sha256>`, attached by a hardlink
  `objects/<csum>.file.xattrs`; empty xattrs are not written; tar modes carry the S_IFMT bits.

Every object is written with the checksum its name claims, recomputed as it is written; a corrupted or
forged object is rejected. In a `bare` or `bare-user` repository regular files are written by loose.py
straight into `objects/` (each named only once verified) in libostree's on-disk format (the GI calls per
object cost more than the bytes); metadata objects, symlinks and other repository modes go through
libostree. Nothing is
extracted to the filesystem: a large file streams in fixed-size chunks, so memory stays bounded whatever
the image size.

All writes happen inside the caller's transaction (see `transaction`); refs are written by the caller once
the layer's stream has been verified.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import stat
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from builder.errors import ImportFailure
from builder.ostree import loose
from builder.ostree.gi import GLib, OSTree
from builder.ostree.objwrite import ParallelWrites
from builder.ostree.tarstream import Member, TarFormatError, TarReader

# The loose-object stage of each repository's open transaction (see `transaction`).
_STAGES: weakref.WeakKeyDictionary[Any, loose.Stage] = weakref.WeakKeyDictionary()

REPO_PREFIX = "sysroot/ostree/repo/"
# ostree-ext's threshold between write_regfile_inline (one buffer) and the streaming ContentWriter.
SMALL_REGFILE_SIZE = 127 * 1024
# Metadata objects are held in memory to be parsed; real ones are kilobytes, ostree's own cap is larger.
MAX_METADATA_SIZE = 64 * 1024 * 1024
MAX_XATTRS_SIZE = 1024 * 1024
CHUNK_SIZE = 1024 * 1024
MAX_REMEMBERED_PATHS = 4096

_METADATA_TYPES = {
    "commit": (OSTree.ObjectType.COMMIT, "(a{sv}aya(say)sstayay)"),
    "dirtree": (OSTree.ObjectType.DIR_TREE, "(a(say)a(sayay))"),
    "dirmeta": (OSTree.ObjectType.DIR_META, "(uuua(ayay))"),
    "commitmeta": (OSTree.ObjectType.COMMIT_META, "a{sv}"),
}
EMPTY_XATTRS_SHA256 = hashlib.sha256(b"").hexdigest()
_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class LayerStats:
    """What one ostree layer held."""

    commit: str | None  # the commit object (commit layer only)
    content_objects: tuple[str, ...]  # every content object the layer carried (written or already present)
    metadata_objects: int
    written: int  # content objects actually written (the rest were already in the repository)


def _variant(data: bytes, signature: str) -> Any:
    v = GLib.Variant.new_from_bytes(GLib.VariantType.new(signature), GLib.Bytes.new(data), False)
    return v.get_normal_form()


_CHECKSUM = re.compile("[0-9a-f]{64}")


def _is_checksum(text: str) -> bool:
    return _CHECKSUM.fullmatch(text) is not None


def _parse_object_path(rel: str, layer: str) -> tuple[str, str]:
    """`objects/XX/YYYY.suffix` -> (checksum, suffix)."""
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] != "objects" or len(parts[1]) != 2 or "." not in parts[2]:
        raise ImportFailure(f"layer {layer}: unexpected ostree object path {rel!r}")
    name, _, suffix = parts[2].partition(".")
    checksum = parts[1] + name
    if not _is_checksum(checksum):
        raise ImportFailure(f"layer {layer}: invalid object checksum in {rel!r}")
    return checksum, suffix


def _read_all(tf: TarReader, member: Member, limit: int, layer: str) -> bytes:
    if not member.isreg():
        raise ImportFailure(f"layer {layer}: {member.name} is not a regular file")
    if member.size > limit:
        raise ImportFailure(f"layer {layer}: {member.name} is too large ({member.size} bytes)")
    data = tf.read(member.size)
    if len(data) != member.size:
        raise ImportFailure(f"layer {layer}: truncated entry {member.name}")
    return data


class _LayerReader:
    """The state of reading one layer's object stream."""

    def __init__(self, repo: Any, layer: str, *, commit_layer: bool, expected_commit: str | None) -> None:
        self.repo = repo
        self.layer = layer
        self.commit_layer = commit_layer
        self.expected_commit = expected_commit
        self.commit: str | None = None
        self.xattrs: dict[str, loose.Xattrs] = {
            EMPTY_XATTRS_SHA256: loose.Xattrs.from_variant(_variant(b"", "a(ayay)"))
        }
        self.next_xattrs: tuple[str, str] | None = None  # (content checksum, xattrs sha256)
        self.content: list[str] = []
        self.metadata = 0
        self.stage = _STAGES.get(repo)
        self.paths: dict[str, str] = {}  # object checksum -> a path of it (recent objects only)
        self.writes = ParallelWrites(self.fail, self.has_content)

    def has_content(self, checksum: str) -> bool:
        """Whether the object is there already; with a stage, False means the caller must write it."""
        if self.stage is not None:
            return not self.stage.claim(checksum)
        return bool(self.repo.has_object(OSTree.ObjectType.FILE, checksum, None)[1])

    def fail(self, what: str) -> ImportFailure:
        return ImportFailure(
            f"layer {self.layer}: {what}",
            hint="the image is corrupt or was not written by ostree-ext/imgbuild encapsulation",
        )

    # --- xattrs ---
    def cache_xattrs(self, tf: TarReader, member: Member, expected: str | None) -> str:
        data = _read_all(tf, member, MAX_XATTRS_SIZE, self.layer)
        digest = hashlib.sha256(data).hexdigest()
        if expected is not None and expected != digest:
            raise self.fail(f"xattrs {member.name} has sha256 {digest}")
        if digest not in self.xattrs:
            try:
                self.xattrs[digest] = loose.Xattrs.from_variant(_variant(data, "a(ayay)"))
            except (TypeError, ValueError, UnicodeError) as e:
                raise self.fail(f"xattrs {member.name} cannot be read ({e})") from None
        return digest

    def queue_xattrs(self, checksum: str, xattrs_digest: str) -> None:
        if self.next_xattrs is not None:
            raise self.fail(f"dangling xattrs for object {self.next_xattrs[0]}")
        self.next_xattrs = (checksum, xattrs_digest)

    def link_target_digest(self, member: Member) -> str:
        digest = member.linkname.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
        if "/" in member.linkname and "/objects/" in member.linkname:
            # v1: the link points at objects/XX/YYYY.file-xattrs
            parent = member.linkname.rsplit("/", 2)[-2]
            digest = parent + digest
        if not _is_checksum(digest):
            raise self.fail(f"invalid xattrs link {member.name} -> {member.linkname}")
        return digest

    # --- objects ---
    def metadata_object(self, tf: TarReader, member: Member, checksum: str, suffix: str) -> None:
        objtype, signature = _METADATA_TYPES[suffix]
        if not self.commit_layer:
            raise self.fail(f"metadata object {checksum}.{suffix} in a chunk layer")
        if self.commit is None and suffix != "commit":
            raise self.fail(f"the first object is {checksum}.{suffix}, not the commit")
        data = _read_all(tf, member, MAX_METADATA_SIZE, self.layer)
        value = _variant(data, signature)
        if suffix == "commit":
            if self.commit is not None:
                raise self.fail("more than one commit object")
            if self.expected_commit is not None and checksum != self.expected_commit:
                raise self.fail(f"commit {checksum} is not the image's ostree.commit {self.expected_commit}")
            self.commit = checksum
            # Until every object of the layer is in, the commit is partial (fsck and pulls know it).
            self.repo.mark_commit_partial(checksum, True)
        if suffix == "commitmeta":
            if checksum != self.commit:
                raise self.fail(f"detached metadata for {checksum}, not for the commit {self.commit}")
            self.repo.write_commit_detached_metadata(checksum, value, None)
        else:
            self.write_checked_metadata(objtype, checksum, value)
        self.metadata += 1

    def write_checked_metadata(self, objtype: Any, checksum: str, value: Any) -> None:
        try:
            self.repo.write_metadata(objtype, checksum, value, None)
        except GLib.Error as e:
            raise self.fail(f"object {checksum}: {e.message}") from None

    def content_object(self, tf: TarReader, member: Member, checksum: str) -> None:
        queued = self.next_xattrs
        self.next_xattrs = None
        if queued is not None and queued[0] != checksum:
            raise self.fail(f"xattrs queued for {queued[0]} but the next object is {checksum}")
        self.content.append(checksum)
        # v0 writes no xattrs entry for objects without xattrs: those have the empty set.
        digest = queued[1] if queued is not None else EMPTY_XATTRS_SHA256
        xattrs = self.xattrs.get(digest)
        if xattrs is None:
            raise self.fail(f"object {checksum} refers to unknown xattrs {digest}")
        # v0 tar modes carry the S_IFMT bits; only the permission bits are the object's.
        perms = member.mode & 0o7777
        try:
            if member.issym():
                self.writes.submit(
                    checksum,
                    self.repo.write_symlink,
                    checksum,
                    member.uid,
                    member.gid,
                    xattrs.variant,
                    member.linkname,
                    None,
                )
            elif member.isreg():
                self.regfile(tf, member, checksum, stat.S_IFREG | perms, xattrs)
            else:
                raise self.fail(f"object {checksum} is neither a regular file nor a symlink")
        except GLib.Error as e:
            raise self.fail(f"object {checksum}: {e.message}") from None

    def regfile(self, tf: TarReader, member: Member, checksum: str, mode: int, xattrs: loose.Xattrs) -> None:
        uid, gid, size = member.uid, member.gid, member.size
        stage = self.stage
        if size <= SMALL_REGFILE_SIZE:
            data = tf.read(size)
            if stage is not None:
                self.writes.submit(
                    checksum, stage.write_regfile, checksum, uid, gid, mode, xattrs, data, size=size
                )
            else:
                self.writes.submit(
                    checksum,
                    self.repo.write_regfile_inline,
                    checksum,
                    uid,
                    gid,
                    mode,
                    xattrs.variant,
                    data,
                    None,
                    size=size,
                )
            return

        def open_writer() -> Any:
            if stage is not None:
                return stage.open_regfile(checksum, uid, gid, mode, xattrs)
            return self.repo.write_regfile(checksum, uid, gid, mode, size, xattrs.variant)

        self.writes.stream(checksum, open_writer, tf.chunks(size))

    # --- the stream ---
    def remember_path(self, name: str, member: Member) -> None:
        """A checkout path's hardlink to an object: kept (for the last few objects) to name the file in
        an error about its object, since the paths come after the object in the stream."""
        target = member.linkname.removeprefix("./")
        if target.startswith(REPO_PREFIX + "objects/") and target.endswith(".file"):
            checksum = target[len(REPO_PREFIX) + 8 : -5].replace("/", "", 1)
            if checksum not in self.paths:
                self.paths[checksum] = name
                if len(self.paths) > MAX_REMEMBERED_PATHS:
                    del self.paths[next(iter(self.paths))]

    def entry(self, tf: TarReader, member: Member) -> None:
        name = member.name.removeprefix("./")
        if member.isdir() or not name.startswith(REPO_PREFIX):
            if member.islnk():
                self.remember_path(name, member)
            return  # directories and the hardlinks of the checkout paths carry nothing new
        rel = name[len(REPO_PREFIX) :]
        if rel.startswith("xattrs/"):  # v0: the xattrs content, named by its sha256
            self.cache_xattrs(tf, member, rel.rsplit("/", 1)[-1])
            return
        if not rel.startswith("objects/"):
            return  # config, refs/, state/...
        checksum, suffix = _parse_object_path(rel, self.layer)
        if suffix in _METADATA_TYPES:
            self.metadata_object(tf, member, checksum, suffix)
        elif suffix == "file":
            if self.commit_layer and self.commit is None:
                raise self.fail(f"content object {checksum} before the commit object")
            self.content_object(tf, member, checksum)
        elif suffix == "file-xattrs":  # v1: the xattrs content, named by its sha256
            self.cache_xattrs(tf, member, checksum)
        elif suffix == "file-xattrs-link":  # v1: hardlink to .file-xattrs, or a copy of it
            if member.islnk():
                digest = self.link_target_digest(member)
            else:
                digest = self.cache_xattrs(tf, member, None)
            self.queue_xattrs(checksum, digest)
        elif suffix == "file.xattrs":  # v0: hardlink to xattrs/<sha256>
            if not member.islnk():
                raise self.fail(f"{member.name} is not a hardlink")
            self.queue_xattrs(checksum, self.link_target_digest(member))
        else:
            raise self.fail(f"unknown object kind {suffix!r} in {member.name}")


def import_layer_objects(
    repo: Any, stream: IO[bytes], *, layer: str, commit_layer: bool, expected_commit: str | None = None
) -> LayerStats:
    """Write the objects of one ostree layer's (uncompressed) tar stream into `repo`.

    Must run inside a transaction. For the commit layer the commit is marked partial; the caller unmarks
    it once everything it references is present.
    """
    reader = _LayerReader(repo, layer, commit_layer=commit_layer, expected_commit=expected_commit)
    try:
        try:
            with reader.writes:
                tf = TarReader(stream)
                for member in tf:
                    reader.entry(tf, member)
        except TarFormatError as e:
            raise reader.fail(f"not a valid tar stream ({e})") from None
        if reader.next_xattrs is not None:
            raise reader.fail(f"xattrs for {reader.next_xattrs[0]} but no object follows")
        if commit_layer and reader.commit is None:
            raise reader.fail("no commit object")
    except ImportFailure as e:
        failed = reader.writes.failed_object
        if failed is not None and failed in e.message and failed in reader.paths:
            e.message += f" (the object of /{reader.paths[failed]})"
        if reader.commit is not None:
            repo.mark_commit_partial(reader.commit, False)
        raise
    except BaseException:
        if reader.commit is not None:
            # The caller aborts the transaction, and the commit's objects go with it: no marker for them.
            repo.mark_commit_partial(reader.commit, False)
        raise
    return LayerStats(reader.commit, tuple(reader.content), reader.metadata, reader.writes.written)


def write_object_set_commit(repo: Any, content_objects: tuple[str, ...]) -> str:
    """The synthetic commit ostree-ext records a chunk layer with.

    A flat tree where each content object is a file named by its checksum, root 0/0/0755, timestamp 0:
    holding it under the layer's ref keeps the objects from being pruned and lets a later import (or a
    booted bootc/rpm-ostree) see that the layer is present.
    """
    mtree = OSTree.MutableTree.new()
    for checksum in sorted(set(content_objects)):
        mtree.replace_file(checksum, checksum)
    dirmeta = GLib.Variant("(uuua(ayay))", (0, 0, stat.S_IFDIR | 0o755, []))
    if sys.byteorder == "little":
        dirmeta = dirmeta.byteswap()  # ostree stores dirmeta's integers big-endian
    _, raw = repo.write_metadata(OSTree.ObjectType.DIR_META, None, dirmeta, None)
    mtree.set_metadata_checksum(OSTree.checksum_from_bytes(raw))
    _, root = repo.write_mtree(mtree, None)
    _, commit = repo.write_commit_with_time(None, None, None, None, root, 0, None)
    return str(commit)


def _new_stage(repo: Any) -> loose.Stage | None:
    mode = repo.get_mode()
    if mode not in loose.SUPPORTED_MODES:
        return None
    return loose.Stage(Path(repo.get_path().get_path()), mode)


@contextmanager
def transaction(repo: Any) -> Iterator[None]:
    """An ostree transaction: committed when the block ends cleanly, aborted otherwise (also on SIGINT).

    The content objects loose.py wrote stay when the transaction commits (libostree syncs them with its
    commit, or the caller's syncfs before the refs does) and are removed when it is aborted."""
    stage = _new_stage(repo)
    repo.prepare_transaction(None)
    if stage is not None:
        _STAGES[repo] = stage
    try:
        try:
            yield
            if stage is not None:
                stage.publish()
        except BaseException as error:
            _abort(repo, stage, error)
            raise
        repo.commit_transaction(None)
    finally:
        _STAGES.pop(repo, None)


def _abort(repo: Any, stage: loose.Stage | None, error: BaseException) -> None:
    """Abort the transaction; a failure of the clean-up is reported beside the error, never instead of it."""
    try:
        if stage is not None:
            for failure in stage.discard():
                error.add_note(f"removing an object of the aborted transaction failed: {failure}")
    finally:
        try:
            repo.abort_transaction(None)
        except GLib.Error as e:
            error.add_note(f"aborting the ostree transaction failed too: {e.message}")


def syncfs(path: Path) -> None:
    """syncfs(2) of the filesystem holding `path` (Python has no os.syncfs; sync(2) would wait for every
    filesystem of the machine)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise ImportFailure(f"cannot sync the ostree repository {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
