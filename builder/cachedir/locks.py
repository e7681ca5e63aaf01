"""Who uses the cache right now: the cache lock, leases on images, and when each image was last used.

    <cache>/lock                 flock: shared while something writes objects no ref or lease covers yet
                                 (a fetch, an import, taking a lease); exclusive while `cache prune` removes
    <cache>/leases/<name>.json   one per image a running command uses; flock-ed (shared) by its holder for as
                                 long as it is used, so a holder that died leaves a file nobody locks (stale)
    <cache>/used/<hash>.json     the last use of an image (its ostree ref), rewritten at each use

Why a lock and leases: an import writes objects into the ostree repository before the refs that reach them,
and a fetch writes blobs before anything records them; `ostree prune` would take those for garbage. Writers
hold the lock shared, so prune (exclusive) waits for them and never sees their half-recorded state. After
its import a build holds a lease instead (it may run for minutes, and prune must not wait that long): prune
keeps every image a live lease names and takes only what is free.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LOCK = "lock"
LEASES = "leases"
USED = "used"


def _open_lock(cache: Path) -> IO[bytes]:
    cache.mkdir(parents=True, exist_ok=True)
    return open(cache / LOCK, "ab")


@contextmanager
def writing(cache: Path) -> Iterator[None]:
    """Hold the cache lock shared: objects written meanwhile are safe from a prune until refs or a lease
    cover them. Several writers (processes or threads) hold it at once."""
    with _open_lock(cache) as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def pruning(cache: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the cache lock exclusively; `on_wait` is called first when a writer holds it (then this waits)."""
    with _open_lock(cache) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Lease:
    """An image in use: its ostree image ref, and its manifest digest when known."""

    path: Path
    image_ref: str
    digest: str | None
    pid: int


class _Held:
    """The open, locked lease files of this process (the lock lives as long as the file stays open)."""

    def __init__(self) -> None:
        self.files: dict[Path, IO[str]] = {}
        atexit.register(self.release_all)

    def add(self, path: Path, f: IO[str]) -> None:
        self.files[path] = f

    def release(self, path: Path) -> None:
        f = self.files.pop(path, None)
        if f is not None:
            path.unlink(missing_ok=True)  # before closing: a prune never finds it unlocked and in use
            f.close()

    def release_all(self) -> None:
        for path in list(self.files):
            self.release(path)


_held = _Held()


def take(cache: Path, image_ref: str, digest: str | None) -> Path:
    """A lease on an image, held until `release` or the end of the process. Take it while holding
    `writing` (a prune running now has read the leases already, and might remove the image)."""
    directory = cache / LEASES
    directory.mkdir(parents=True, exist_ok=True)
    record = {"image_ref": image_ref, "digest": digest, "pid": os.getpid(), "since": time.time()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".lease-", suffix=".tmp")
    f = os.fdopen(fd, "w")
    try:
        # Locked before it gets its name: a lease file without a lock is a stale one.
        fcntl.flock(f, fcntl.LOCK_SH)
        f.write(json.dumps(record))
        f.flush()
        path = directory / f"{os.getpid()}-{Path(tmp).stem.removeprefix('.lease-')}.json"
        Path(tmp).replace(path)
    except BaseException:
        f.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    _held.add(path, f)
    mark_used(cache, image_ref)
    return path


def release(path: Path) -> None:
    _held.release(path)


@contextmanager
def leased(cache: Path, image_ref: str, digest: str | None) -> Iterator[None]:
    """A lease for the length of a block; see `take`."""
    with writing(cache):
        path = take(cache, image_ref, digest)
    try:
        yield
    finally:
        release(path)


def live_leases(cache: Path, *, remove_stale: bool) -> list[Lease]:
    """The leases whose holder still runs; stale ones (the holder died) removed when `remove_stale`."""
    found = []
    directory = cache / LEASES
    if not directory.is_dir():
        return []
    for path in sorted(directory.glob("*.json")):
        try:
            f = open(path)  # noqa: SIM115 (closed by the with below; opening may find it gone)
        except FileNotFoundError:  # released meanwhile
            continue
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # its holder has it locked: live
            else:
                if remove_stale:
                    path.unlink(missing_ok=True)
                continue
            try:
                record: dict[str, Any] = json.loads(f.read())
            except json.JSONDecodeError:
                continue  # being written: cannot be, it is renamed once written; ignore a damaged one
        digest = record.get("digest")
        found.append(
            Lease(
                path=path,
                image_ref=str(record.get("image_ref")),
                digest=digest if isinstance(digest, str) else None,
                pid=int(record.get("pid", 0)),
            )
        )
    return found


def _used_path(cache: Path, image_ref: str) -> Path:
    return cache / USED / f"{hashlib.sha256(image_ref.encode()).hexdigest()[:32]}.json"


def mark_used(cache: Path, image_ref: str) -> None:
    path = _used_path(cache, image_ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"image_ref": image_ref, "time": time.time()}))
    tmp.replace(path)


def last_used(cache: Path, image_ref: str) -> float | None:
    try:
        value = json.loads(_used_path(cache, image_ref).read_text()).get("time")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def forget(cache: Path, image_ref: str) -> None:
    _used_path(cache, image_ref).unlink(missing_ok=True)
