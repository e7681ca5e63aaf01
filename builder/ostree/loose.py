"""Write regular-file content objects straight into a `bare` or `bare-user` repository, as libostree would.

Why: through PyGObject, libostree costs several GI calls, a temporary file, an fstat and a hash per object
(`write_regfile_inline`, or `write_regfile` plus one `write_all` per chunk plus `finish`); for an image of
tens of thousands of small files those calls, not the bytes, dominate the import. Here one object is:
an anonymous file (O_TMPFILE) in its `objects/XX/` directory, write(s) while hashing, the metadata calls
that change something (fchown/fchmod only where creation did not already give the owner and mode),
fsetxattr, futimens, then one linkat to its name once its checksum has been verified, close.

The on-disk format is libostree's for the mode (ostree-repo-commit.c, `commit_loose_regfile_object`):
- `bare`: the file carries the object's uid, gid, mode and xattrs; mtime 0.
- `bare-user`: owned by us, mode & 0775 | 0400, the object's uid/gid/mode/xattrs in the `user.ostreemeta`
  xattr as the GVariant `(uuua(ayay))` (big-endian integers); mtime 0.
The checksum is ostree's content checksum: sha256 over the file header (the size-prefixed GVariant
`(uuuusa(ayay))`: uid, gid, mode big-endian, rdev 0, no symlink target, xattrs) then the content. It is
computed while the bytes are written and must equal the name the layer gave the object, or the object is
refused ("Corrupted file object", as libostree says) and never gets a name. `ostree fsck` in the tests
checks the format.

An object gets its name only complete and verified, so whatever interrupts the import, `objects/` holds
only sound objects (libostree, with fsync off inside a transaction as the import runs it, also writes
straight into `objects/`). Nothing refers to them until the caller writes refs, after a sync. An aborted
transaction removes the objects it named (`discard`). Where the filesystem has no O_TMPFILE, objects are
written under a private staging directory in the repository's `tmp/` and renamed into place instead.
Writing into the 256 `objects/XX/` directories, not one staging directory, also lets the writer threads
create files in parallel (a directory takes one creation at a time).
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
    """Content objects of one transaction; thread-safe."""

    def __init__(self, repo_path: Path, mode: Any) -> None:
        assert mode in SUPPORTED_MODES
        self.objects = f"{repo_path}/objects"  # strings: the per-object paths are built in hot loops
        self.tmp = repo_path / "tmp"
        self.bare = mode == OSTree.RepoMode.BARE
        self.objects_fd = -1
        self.tmpfile = True  # O_TMPFILE works here (until a filesystem says otherwise)
        self.dir: str | None = None  # the staging directory, without O_TMPFILE only
        self.dir_fd = -1
        self.linked: list[str] = []  # objects this transaction put into objects/ (removed by `discard`)
        self.claimed: set[str] = set()  # being written or written by this transaction (any object kind)
        self.lock = threading.Lock()
        self.headers: dict[tuple[int, int, int, int], tuple[bytes, bytes]] = {}
        # Per directory objects are created in: whether a new file there gets our owner and the umask's
        # mode (see `_plain_directory`); the umask as the transaction started.
        self.plain: dict[str, bool] = {}
        self.umask = _umask()

    def _objects_fd(self) -> int:
        if self.objects_fd < 0:
            with self.lock:
                if self.objects_fd < 0:
                    self.objects_fd = os.open(self.objects, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self.objects_fd

    def _prefix(self, prefix: str) -> bool:
        """Make `objects/XX` if missing; whether it is plain (see `plain`)."""
        plain = self.plain.get(prefix)
        if plain is None:
            objects_fd = self._objects_fd()
            with contextlib.suppress(FileExistsError):
                os.mkdir(prefix, 0o777, dir_fd=objects_fd)
            fd = os.open(prefix, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=objects_fd)
            try:
                plain = self.plain[prefix] = _plain_directory(fd)
            finally:
                os.close(fd)
        return plain

    def _dir_fd(self) -> int:
        """The staging directory (made on first use), as a descriptor: no path lookups per object."""
        if self.dir_fd >= 0:
            return self.dir_fd
        with self.lock:
            if self.dir is None:
                self.dir = tempfile.mkdtemp(prefix="imgbuild-staging-", dir=self.tmp)
                self.dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self.plain[""] = _plain_directory(self.dir_fd)
            return self.dir_fd

    def create(self, checksum: str, uid: int, gid: int, mode: int) -> tuple[int, bool, bool, bool]:
        """A new file for the object: (descriptor, whether it is anonymous (O_TMPFILE), whether fchown
        and fchmod are still needed).

        Two of the syscalls per object are skipped when they would change nothing: fchown when the file
        is created with the object's owner already (root's objects, written by root), fchmod when the
        creation mode survives the umask and no set-id bit has to outlive a chown."""
        perm = mode & 0o7777 if self.bare else (mode & 0o775) | 0o400
        prefix = checksum[:2]
        try:
            if self.tmpfile:
                plain = self._prefix(prefix)
                chown, chmod = self._needs(uid, gid, perm, plain)
                try:
                    flags = os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC
                    fd = os.open(prefix, flags, 0o600 if chmod else perm, dir_fd=self._objects_fd())
                    return fd, True, chown, chmod
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                        raise
                    self.tmpfile = False
            dir_fd = self._dir_fd()
            chown, chmod = self._needs(uid, gid, perm, self.plain[""])
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(checksum, flags, 0o600 if chmod else perm, dir_fd=dir_fd), False, chown, chmod
        except OSError as e:
            raise object_error(checksum, "cannot create it", e) from e

    def _needs(self, uid: int, gid: int, perm: int, plain: bool) -> tuple[bool, bool]:
        if not plain or self.umask is None:
            return self.bare, True
        return self.bare and (uid, gid) != (os.geteuid(), os.getegid()), bool(perm & (self.umask | 0o7000))

    def name(self, fd: int, checksum: str, anonymous: bool) -> None:
        """Give the finished, verified object its name in `objects/`."""
        final = f"{checksum[:2]}/{checksum[2:]}.file"
        try:
            if anonymous:
                os.link(f"/proc/self/fd/{fd}", final, dst_dir_fd=self._objects_fd(), follow_symlinks=True)
            else:
                self._prefix(checksum[:2])
                os.rename(checksum, final, src_dir_fd=self.dir_fd, dst_dir_fd=self._objects_fd())
        except FileExistsError:
            return  # another process wrote the same object meanwhile: the name says it is the same
        except OSError as e:
            raise object_error(checksum, "cannot move it into the repository", e) from e
        with self.lock:
            self.linked.append(checksum)

    def unlink_unnamed(self, checksum: str, anonymous: bool) -> None:
        """Remove what a failed write left (an anonymous file goes with its descriptor)."""
        if not anonymous:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(checksum, dir_fd=self.dir_fd)

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
        for create, write, (owner, mode,) xattrs, time, name and close."""
        header, meta = self._headers(uid, gid, mode, xattrs)
        digest = hashlib.sha256(header)
        digest.update(data)
        actual = digest.hexdigest()
        if actual != checksum:
            raise corrupted(checksum, actual)
        fd, anonymous, chown, chmod = self.create(checksum, uid, gid, mode)
        try:
            try:
                _write_all(fd, data)
            except OSError as e:
                raise object_error(checksum, "cannot write it", e) from e
            self.apply_metadata(fd, checksum, (uid, gid, mode), xattrs, meta, chown=chown, chmod=chmod)
            self.name(fd, checksum, anonymous)
        except BaseException:
            os.close(fd)
            self.unlink_unnamed(checksum, anonymous)
            raise
        os.close(fd)

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
        """The transaction is committed: its objects stay (the caller's commit syncs them)."""
        with self.lock:
            self.linked.clear()
        self._close()

    def discard(self) -> list[str]:
        """The transaction is aborted: remove the objects it named. Returns what could not be removed."""
        failures = []
        for checksum in self.linked:
            try:
                os.unlink(f"{checksum[:2]}/{checksum[2:]}.file", dir_fd=self._objects_fd())
            except FileNotFoundError:
                pass
            except OSError as e:
                failures.append(f"object {checksum}: {os.strerror(e.errno or 0)}")
        self.linked.clear()
        self._close()
        return failures

    def _close(self) -> None:
        if self.objects_fd >= 0:
            os.close(self.objects_fd)
            self.objects_fd = -1
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1
        if self.dir is not None:
            shutil.rmtree(self.dir)
            self.dir = None
        self.claimed.clear()


class StagedFile:
    """One regular-file object being written: hashed as it is written, checked and named by `finish`."""

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
        self.fd, self.anonymous, self.chown, self.chmod = stage.create(checksum, *owner_mode)

    def write_all(self, data: bytes | memoryview, _cancellable: object = None) -> None:
        self.hash.update(data)
        try:
            _write_all(self.fd, data)
        except OSError as e:
            self.close(failed=True)
            raise object_error(self.checksum, "cannot write it", e) from e

    def close(self, *, failed: bool) -> None:
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        if failed:
            self.stage.unlink_unnamed(self.checksum, self.anonymous)

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
            self.stage.name(self.fd, self.checksum, self.anonymous)
        except BaseException:
            self.close(failed=True)
            raise
        self.close(failed=False)


def object_error(checksum: str, what: str, cause: OSError | None = None) -> ObjectWriteError:
    detail = f": {os.strerror(cause.errno)}" if cause is not None and cause.errno else ""
    return ObjectWriteError(f"object {checksum}: {what}{detail}")


def corrupted(checksum: str, actual: str) -> ObjectWriteError:
    return ObjectWriteError(
        f"object {checksum}: Corrupted file object; checksum expected={checksum} actual={actual}",
        corrupt=True,
    )


def _plain_directory(dir_fd: int) -> bool:
    """Whether a file created in the directory certainly gets our owner and the umask's mode: its group
    is ours and it is not set-group-ID (so new files get our group whether the filesystem gives them the
    creator's group or the directory's), and it has no default ACL (which would replace the umask)."""
    st = os.fstat(dir_fd)
    if st.st_gid != os.getegid() or st.st_mode & 0o2000:
        return False
    try:
        os.getxattr(dir_fd, "system.posix_acl_default")
    except OSError as e:
        return e.errno in (errno.ENODATA, errno.EOPNOTSUPP)
    return False


def _umask() -> int | None:
    """The process's umask, read without changing it (no imgbuild code changes it during an import)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None
