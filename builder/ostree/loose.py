"""Write regular-file content objects straight into a `bare` or `bare-user` repository, as libostree would.

Why: through PyGObject, libostree costs several GI calls, a temporary file, an fstat and a hash per object
(`write_regfile_inline`, or `write_regfile` plus one `write_all` per chunk plus `finish`); for an image of
tens of thousands of small files those calls, not the bytes, dominate the import. Here one object is:
open, write(s) while hashing, fchown/fchmod/fsetxattr/futimens, close; and one rename when the layer is
published.

The on-disk format is libostree's for the mode (ostree-repo-commit.c, `commit_loose_regfile_object`):
- `bare`: the file carries the object's uid, gid, mode and xattrs; mtime 0.
- `bare-user`: owned by us, mode & 0775 | 0400, the object's uid/gid/mode/xattrs in the `user.ostreemeta`
  xattr as the GVariant `(uuua(ayay))` (big-endian integers); mtime 0.
The checksum is ostree's content checksum: sha256 over the file header (the size-prefixed GVariant
`(uuuusa(ayay))`: uid, gid, mode big-endian, rdev 0, no symlink target, xattrs) then the content. It is
computed while the bytes are written and must equal the name the layer gave the object, or the object is
refused ("Corrupted file object", as libostree says). `ostree fsck` in the tests checks the format.

Objects are written into a private staging directory under the repository's `tmp/` and renamed into
`objects/XX/` only when the layer has been verified (`publish`); `discard` removes them. libostree's
`commit_transaction`, which runs right after `publish`, syncs the filesystem they are on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.ostree.gi import GLib, OSTree

SUPPORTED_MODES = frozenset({OSTree.RepoMode.BARE, OSTree.RepoMode.BARE_USER})
OSTREEMETA = "user.ostreemeta"


class ObjectWriteError(Exception):
    """An object could not be written (the message names the object and the cause): its data does not
    match its name (`corrupt`), or the repository's filesystem refused it."""

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


@dataclass(frozen=True)
class Xattrs:
    """One set of extended attributes: the GVariant `a(ayay)` and its entries as (name, value)."""

    variant: Any
    entries: tuple[tuple[str, bytes], ...]

    @staticmethod
    def from_variant(variant: Any) -> Xattrs:
        entries = []
        for name, value in variant.unpack():
            entries.append((os.fsdecode(bytes(name).rstrip(b"\0")), bytes(value)))
        return Xattrs(variant, tuple(entries))


def _u32_be(value: int) -> Any:
    # GVariant writes host order; ostree stores these integers big-endian.
    return GLib.Variant.new_uint32(int.from_bytes(value.to_bytes(4, "little"), "big"))


def _serialized(variant: Any) -> bytes:
    return bytes(variant.get_data_as_bytes().get_data())


def file_header(uid: int, gid: int, mode: int, xattrs: Any, symlink_target: str = "") -> bytes:
    """What ostree hashes before a content object's bytes: the size-prefixed `(uuuusa(ayay))` header."""
    variant = GLib.Variant.new_tuple(
        _u32_be(uid), _u32_be(gid), _u32_be(mode), _u32_be(0), GLib.Variant.new_string(symlink_target), xattrs
    )
    data = _serialized(variant)
    return struct.pack(">I", len(data)) + b"\0\0\0\0" + data  # the size, padded to 8 bytes


def _ostreemeta(uid: int, gid: int, mode: int, xattrs: Any) -> bytes:
    return _serialized(GLib.Variant.new_tuple(_u32_be(uid), _u32_be(gid), _u32_be(mode), xattrs))


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Stage:
    """Content objects of one transaction, staged under `repo/tmp`; thread-safe."""

    def __init__(self, repo_path: Path, mode: Any) -> None:
        assert mode in SUPPORTED_MODES
        self.objects = f"{repo_path}/objects"  # strings: the per-object paths are built in hot loops
        self.tmp = repo_path / "tmp"
        self.bare = mode == OSTree.RepoMode.BARE
        self.dir: str | None = None
        self.dir_fd = -1
        self.staged: set[str] = set()  # written, awaiting publish
        self.claimed: set[str] = set()  # being written or written by this transaction (any object kind)
        self.lock = threading.Lock()
        self.headers: dict[tuple[int, int, int, int], tuple[bytes, bytes]] = {}
        # What a new file in the staging directory gets without asking (see `_creation_defaults`).
        self.owner: tuple[int, int] | None = None
        self.umask: int | None = None

    def _dir_fd(self) -> int:
        """The staging directory (made on first use), as a descriptor: no path lookups per object."""
        if self.dir_fd >= 0:
            return self.dir_fd
        with self.lock:
            if self.dir is None:
                self.dir = tempfile.mkdtemp(prefix="imgbuild-staging-", dir=self.tmp)
                self.dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self.owner, self.umask = _creation_defaults(self.dir_fd)
            return self.dir_fd

    def create_mode(self, uid: int, gid: int, mode: int) -> tuple[int, bool, bool]:
        """(mode to create the file with, whether fchown and fchmod are still needed).

        Two of the syscalls per object are skipped when they would change nothing: fchown when the file
        is created with the object's owner already (root's objects, written by root), fchmod when the
        creation mode survives the umask and no set-id bit has to outlive a chown."""
        perm = mode & 0o7777 if self.bare else (mode & 0o775) | 0o400
        chown = self.bare and self.owner != (uid, gid)
        chmod = self.umask is None or bool(perm & (self.umask | 0o7000))
        return (0o600 if chmod else perm), chown, chmod

    def claim(self, checksum: str) -> bool:
        """False when the content object is in the repository or this transaction has it already;
        otherwise True, and the caller (only it) writes the object."""
        with self.lock:
            if checksum in self.claimed:
                return False
            self.claimed.add(checksum)
        return not os.path.lexists(f"{self.objects}/{checksum[:2]}/{checksum[2:]}.file")

    def _headers(self, uid: int, gid: int, mode: int, xattrs: Xattrs) -> tuple[bytes, bytes]:
        key = (uid, gid, mode, id(xattrs.variant))
        found = self.headers.get(key)
        if found is None:
            meta = b"" if self.bare else _ostreemeta(uid, gid, mode, xattrs.variant)
            found = self.headers[key] = (file_header(uid, gid, mode, xattrs.variant), meta)
        return found

    def open_regfile(self, checksum: str, uid: int, gid: int, mode: int, xattrs: Xattrs) -> StagedFile:
        header, meta = self._headers(uid, gid, mode, xattrs)
        return StagedFile(self, checksum, (uid, gid, mode), xattrs, header, meta)

    def write_regfile(
        self, checksum: str, uid: int, gid: int, mode: int, xattrs: Xattrs, data: bytes | memoryview
    ) -> None:
        """A small object whose content is in memory: checked first, then written with one call each
        for create, write, (owner, mode,) xattrs, time and close."""
        header, meta = self._headers(uid, gid, mode, xattrs)
        digest = hashlib.sha256(header)
        digest.update(data)
        actual = digest.hexdigest()
        if actual != checksum:
            raise corrupted(checksum, actual)
        dir_fd = self._dir_fd()
        create, chown, chmod = self.create_mode(uid, gid, mode)
        try:
            fd = os.open(checksum, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, create, dir_fd=dir_fd)
        except OSError as e:
            raise object_error(checksum, "cannot create it", e) from e
        try:
            try:
                _write_all(fd, data)
            except OSError as e:
                raise object_error(checksum, "cannot write it", e) from e
            self.apply_metadata(fd, checksum, (uid, gid, mode), xattrs, meta, chown=chown, chmod=chmod)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(checksum, dir_fd=dir_fd)
            raise
        os.close(fd)
        with self.lock:
            self.staged.add(checksum)

    def apply_metadata(
        self,
        fd: int,
        checksum: str,
        owner_mode: tuple[int, int, int],
        xattrs: Xattrs,
        meta: bytes,
        *,
        chown: bool,
        chmod: bool,
    ) -> None:
        uid, gid, mode = owner_mode
        if self.bare:
            try:
                if chown:
                    os.fchown(fd, uid, gid)
                if chmod:
                    os.fchmod(fd, mode)
            except OSError as e:
                raise object_error(checksum, f"cannot set owner {uid}:{gid} and mode {mode:o}", e) from e
            for name, value in xattrs.entries:
                try:
                    os.setxattr(fd, name, value)
                except OSError as e:
                    if e.errno == errno.EINVAL and not name:
                        raise object_error(checksum, "an extended attribute has an empty name") from e
                    raise object_error(checksum, f"cannot set extended attribute {name!r}", e) from e
        else:
            try:
                os.setxattr(fd, OSTREEMETA, meta)
                # libostree 2022.7's bits (seen on its objects): no setuid/setgid/sticky, no world
                # write, always readable by us; a user-mode checkout takes them from here.
                if chmod:
                    os.fchmod(fd, (mode & 0o775) | 0o400)
            except OSError as e:
                raise object_error(checksum, f"cannot set mode and {OSTREEMETA}", e) from e
        try:
            os.utime(fd, ns=(0, 0))  # libostree's OSTREE_TIMESTAMP, for tools that compare mtimes
        except OSError as e:
            raise object_error(checksum, "cannot set its time", e) from e

    def publish(self) -> None:
        """Move every staged object into `objects/` (then the caller's commit_transaction syncs them)."""
        if self.dir is None:
            return
        stage_fd = self.dir_fd
        objects_fd = os.open(self.objects, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._move_all(stage_fd, objects_fd)
        finally:
            os.close(objects_fd)
        self.discard()

    def _move_all(self, stage_fd: int, objects_fd: int) -> None:
        made: set[str] = set()
        for checksum in sorted(self.staged):
            prefix = checksum[:2]
            if prefix not in made:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(prefix, 0o777, dir_fd=objects_fd)
                made.add(prefix)
            try:
                os.rename(
                    checksum, f"{prefix}/{checksum[2:]}.file", src_dir_fd=stage_fd, dst_dir_fd=objects_fd
                )
            except OSError as e:
                raise ObjectWriteError(f"object {checksum}: cannot move it into the repository: {e}") from e

    def discard(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1
        if self.dir is not None:
            shutil.rmtree(self.dir)
            self.dir = None
        self.staged.clear()
        self.claimed.clear()


class StagedFile:
    """One regular-file object being written: hashed as it is written, checked and finished by `finish`."""

    def __init__(
        self,
        stage: Stage,
        checksum: str,
        owner_mode: tuple[int, int, int],
        xattrs: Xattrs,
        header: bytes,
        meta: bytes,
    ) -> None:
        self.stage = stage
        self.checksum = checksum
        self.owner_mode = owner_mode
        self.xattrs = xattrs
        self.meta = meta
        self.hash = hashlib.sha256(header)
        self.name = checksum
        create, self.chown, self.chmod = stage.create_mode(*owner_mode)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self.fd = os.open(checksum, flags, create, dir_fd=stage._dir_fd())
        except OSError as e:
            raise self.error("cannot create it", e) from e

    def error(self, what: str, cause: OSError | None = None) -> ObjectWriteError:
        return object_error(self.checksum, what, cause)

    def write_all(self, data: bytes | memoryview, _cancellable: object = None) -> None:
        self.hash.update(data)
        try:
            _write_all(self.fd, data)
        except OSError as e:
            self.close(failed=True)
            raise self.error("cannot write it", e) from e

    def close(self, *, failed: bool) -> None:
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        if failed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=self.stage.dir_fd)

    def finish(self, _cancellable: object = None) -> None:
        actual = self.hash.hexdigest()
        if actual != self.checksum:
            self.close(failed=True)
            raise corrupted(self.checksum, actual)
        try:
            self.stage.apply_metadata(
                self.fd,
                self.checksum,
                self.owner_mode,
                self.xattrs,
                self.meta,
                chown=self.chown,
                chmod=self.chmod,
            )
        except BaseException:
            self.close(failed=True)
            raise
        self.close(failed=False)
        with self.stage.lock:
            self.stage.staged.add(self.checksum)


def object_error(checksum: str, what: str, cause: OSError | None = None) -> ObjectWriteError:
    detail = f": {os.strerror(cause.errno)}" if cause is not None and cause.errno else ""
    return ObjectWriteError(f"object {checksum}: {what}{detail}")


def corrupted(checksum: str, actual: str) -> ObjectWriteError:
    return ObjectWriteError(
        f"object {checksum}: Corrupted file object; checksum expected={checksum} actual={actual}",
        corrupt=True,
    )


def _creation_defaults(dir_fd: int) -> tuple[tuple[int, int] | None, int | None]:
    """(owner, umask) a file created in the directory gets, where they are certain: the owner is ours
    when the directory's group is ours too (whether the filesystem gives new files the creator's group or
    the directory's); the mode is the umask's unless the directory has a default ACL (which replaces it)."""
    st = os.fstat(dir_fd)
    owner = (os.geteuid(), os.getegid()) if st.st_gid == os.getegid() and not st.st_mode & 0o2000 else None
    try:
        os.getxattr(dir_fd, "system.posix_acl_default")
        return owner, None
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
            return owner, None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return owner, int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return owner, None
