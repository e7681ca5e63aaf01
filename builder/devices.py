"""Loop devices and mounts as context managers that always release what they took.

The build hosts have no udev, so `losetup -P` creates no partition nodes: a partition is reached through its
own loop device (`--offset/--sizelimit`). Both context managers release in `finally`, so they are safe on
exceptions, KeyboardInterrupt and the exception the runner raises for SIGTERM.

A release that fails while another error unwinds never replaces it: the first error stays the one raised, and
the release's error is added to it as a note ("also, while releasing: ..."), which the CLI prints beside it.
ReleaseStack gives an ExitStack the same rule (a plain ExitStack raises the last error of its callbacks).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from builder import faults, run
from builder.errors import CommandFailed, ImgbuildError, NeedsRoot

log = logging.getLogger(__name__)

# Unmount/detach attempts and the pause before each retry: a process that just closed a file on the mount
# (or the kernel's own lazy release of a loop device) usually lets go within a second.
RELEASE_ATTEMPTS = 5
RELEASE_PAUSE = 0.3


RELEASE_NOTE = "also, while releasing: "
T = TypeVar("T")
ExitFunc = Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], bool | None]


class DeviceBusy(ImgbuildError):
    """A mount or loop device could not be released."""


_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _defer_signals() -> set[int | signal.Signals]:
    """Hold SIGINT/SIGTERM back while a resource is taken: an interrupt that lands while `mount` or `losetup`
    runs would otherwise leave it taken with no release registered. Returns the mask to restore."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def _restore_signals(mask: set[int | signal.Signals]) -> None:
    """Deliver what was held back: its handler raises here, where the release is already in place."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def note_release_error(first: BaseException, error: BaseException) -> None:
    """Report `error` (from a release) beside `first`, the error that is unwinding."""
    message = error.message if isinstance(error, ImgbuildError) else repr(error)
    first.add_note(RELEASE_NOTE + message)
    log.debug("while releasing after %r: %r", first, error)


@contextmanager
def _released_by(release: Callable[[], None]) -> Iterator[None]:
    """Call `release` when the block ends; if it fails while the block's own error unwinds, that error
    stays the one raised and the release's error becomes a note on it."""
    try:
        yield
    except BaseException as first:
        try:
            release()
        except BaseException as error:
            note_release_error(first, error)
        raise
    release()


class ReleaseStack(ExitStack):
    """An ExitStack where the first error wins: a callback that raises while another error unwinds adds a
    note to it instead of replacing it; every callback still runs, last in, first out."""

    def push(self, exit: Any) -> Any:
        method = getattr(type(exit), "__exit__", None)
        callback: ExitFunc = exit if method is None else method.__get__(exit)

        def guarded(
            exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
        ) -> bool:
            try:
                return bool(callback(exc_type, exc, tb))
            except BaseException as error:
                if exc is None or error is exc:
                    raise
                note_release_error(exc, error)
                return False

        super().push(guarded)
        return exit

    def enter_context(self, cm: AbstractContextManager[T]) -> T:
        result = cm.__enter__()
        self.push(cm)
        return result

    def callback(self, callback: Callable[..., Any], /, *args: Any, **kwds: Any) -> Callable[..., Any]:
        def release(
            exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
        ) -> None:
            callback(*args, **kwds)

        self.push(release)
        return callback


def _need_root(what: str) -> None:
    if not run.is_root():
        raise NeedsRoot(f"{what} needs root", hint="run imgbuild as root (sudo)")


@contextmanager
def loop_device(
    image: Path, *, offset: int = 0, size: int | None = None, read_only: bool = False
) -> Iterator[Path]:
    """Attach `image` (or the byte range offset..offset+size of it) to a free loop device."""
    _need_root("attaching a loop device")
    argv: list[str | os.PathLike[str]] = ["losetup", "--find", "--show", "--offset", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    if read_only:
        argv.append("--read-only")
    argv.append(image)
    mask = _defer_signals()
    try:
        device = Path(run.run(argv, hint="are loop devices available (modprobe loop)?").out.strip())
    except BaseException:
        _restore_signals(mask)
        raise
    log.debug("attached %s to %s (offset %d, size %s)", image, device, offset, size)
    faults.acquired("loop")
    with _released_by(lambda: _detach(device)):
        _restore_signals(mask)
        yield device


def _detach(device: Path) -> None:
    last: CommandFailed | None = None
    for attempt in range(RELEASE_ATTEMPTS):
        try:
            run.run(["losetup", "--detach", device])
            faults.released("loop")
            return
        except CommandFailed as e:
            last = e
            time.sleep(RELEASE_PAUSE * (attempt + 1))
    raise DeviceBusy(
        f"cannot detach {device}: {last.stderr_tail.strip() if last else 'busy'}",
        hint=f"something still uses it; see `losetup -a` and detach it with `losetup -d {device}`",
    )


@contextmanager
def mounted(
    source: Path, target: Path, *, fstype: str | None = None, options: Sequence[str] = ()
) -> Iterator[Path]:
    """Mount `source` on `target` (which must exist) for the duration of the block."""
    _need_root("mounting a filesystem")
    argv: list[str | os.PathLike[str]] = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    argv += [source, target]
    mask = _defer_signals()
    try:
        run.run(argv)
    except BaseException:
        _restore_signals(mask)
        raise
    log.debug("mounted %s on %s", source, target)
    faults.acquired("mount")
    with _released_by(lambda: unmount(target)):
        _restore_signals(mask)
        yield target


def unmount(target: Path) -> None:
    """Unmount `target`, retrying a few times; DeviceBusy names the processes that hold it."""
    last: CommandFailed | None = None
    for attempt in range(RELEASE_ATTEMPTS):
        try:
            run.run(["umount", target])
            faults.released("mount")
            return
        except CommandFailed as e:
            last = e
            time.sleep(RELEASE_PAUSE * (attempt + 1))
    holders = holders_of(target)
    reason = last.stderr_tail.strip().splitlines()[-1] if last and last.stderr_tail.strip() else "busy"
    raise DeviceBusy(
        f"cannot unmount {target}: {reason}; held by: {holders or 'no process found'}",
        hint=f"stop those processes, then `umount {target}`",
    )


def holders_of(mountpoint: Path) -> str:
    """Processes with a file, cwd or root under `mountpoint`, as 'pid (comm), ...'."""
    found: list[str] = []
    prefix = os.path.realpath(mountpoint)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            links = [pid_dir / "cwd", pid_dir / "root"]
            fd_dir = pid_dir / "fd"
            links += list(fd_dir.iterdir())
            for link in links:
                target = str(link.readlink())
                if target == prefix or target.startswith(prefix + "/"):
                    comm = (pid_dir / "comm").read_text().strip()
                    found.append(f"{pid_dir.name} ({comm})")
                    break
        except OSError:  # the process ended or is not ours to read
            continue
    return ", ".join(found)
