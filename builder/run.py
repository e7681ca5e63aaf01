"""The one gateway to subprocesses.

argv lists only (no shell), stdin from /dev/null unless input is given, a clean environment, the command
logged at debug level, and on failure a CommandFailed carrying the command line and the tail of its stderr.
Nothing else in imgbuild imports subprocess (ruff's banned-api rule enforces it).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder import faults
from builder.errors import CommandFailed, ToolMissing

log = logging.getLogger(__name__)

Arg = str | os.PathLike[str]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Variables that carry the user's intent into the tools we run (auth files, proxies, libguestfs backend).
PASSTHROUGH_ENV = (
    "HOME",
    "TMPDIR",
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
    "XDG_RUNTIME_DIR",
    "CONTAINERS_REGISTRIES_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_POLICY_JSON",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "LIBGUESTFS_BACKEND",
    "LIBGUESTFS_BACKEND_SETTINGS",
)

# Debian packages that provide the programs imgbuild runs, for the hint of a ToolMissing error.
PACKAGE_OF = {
    "skopeo": "skopeo",
    "umoci": "umoci",
    "ostree": "ostree",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "grub-mkimage": "grub-common",
    "sgdisk": "gdisk",
    "xorriso": "xorriso",
    "mksquashfs": "squashfs-tools",
    "mmdebstrap": "mmdebstrap",
    "tar": "tar",
    "setfiles": "policycoreutils",
}

STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": DEFAULT_PATH, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    for name in PASSTHROUGH_ENV:
        value = os.environ.get(name)
        if value is not None:
            env[name] = value
    if extra:
        env.update(extra)
    return env


def which(tool: str) -> str | None:
    return shutil.which(tool, path=DEFAULT_PATH)


def require(tool: str) -> str:
    """The absolute path of `tool`, or ToolMissing naming the Debian package that has it."""
    path = which(tool)
    if path is None:
        package = PACKAGE_OF.get(tool, tool)
        raise ToolMissing(
            f"{tool} is not installed",
            hint=f"install the Debian package {package} (`make setup` installs everything imgbuild needs)",
        )
    return path


def _argv(argv: Sequence[Arg]) -> tuple[str, ...]:
    if not argv:
        raise ValueError("empty argv")
    return tuple(os.fspath(a) for a in argv)


def _tail(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def run(
    argv: Sequence[Arg],
    *,
    input: bytes | None = None,
    check: bool = True,
    capture: bool = True,
    stdout: IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Arg | None = None,
    timeout: float | None = None,
    hint: str | None = None,
) -> Completed:
    """Run a program to completion.

    `capture` collects stdout (else it goes to `stdout` or is discarded); stderr is always collected so
    that a failure can show its tail. `env` adds to the clean environment.
    """
    args = _argv(argv)
    faults.point(args[0].rsplit("/", 1)[-1])
    if "/" not in args[0]:
        require(args[0])
    log.debug("run: %s", shlex.join(args))
    out: int | IO[bytes]
    if stdout is not None:
        out = stdout
    else:
        out = subprocess.PIPE if capture else subprocess.DEVNULL
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            env=clean_env(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(args, -1, f"timed out after {timeout} s", hint=hint) from e
    result = Completed(args, proc.returncode, proc.stdout or b"", proc.stderr or b"")
    if check and proc.returncode != 0:
        log.debug("failed: %s\n%s", shlex.join(args), _tail(result.stderr))
        raise CommandFailed(args, proc.returncode, _tail(result.stderr), hint=hint)
    return result


@contextmanager
def spawn(
    argv: Sequence[Arg],
    *,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
    stderr: int | IO[bytes] | None = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    cwd: Arg | None = None,
    check: bool = True,
    hint: str | None = None,
    new_session: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a program whose output is streamed (a tar pipe, a VM console).

    On leaving the block the program is waited for (killed if the block raised); with `check`, a non-zero
    exit raises CommandFailed with the tail of stderr when stderr was piped.
    """
    args = _argv(argv)
    faults.point(args[0].rsplit("/", 1)[-1])
    if "/" not in args[0]:
        require(args[0])
    log.debug("spawn: %s", shlex.join(args))
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=stdout,
        stderr=stderr,
        env=clean_env(env),
        cwd=cwd,
        start_new_session=new_session,
    )
    try:
        yield proc
    except BaseException:
        terminate(proc)
        raise
    err = b""
    if proc.stderr is not None:
        err = proc.stderr.read()
        proc.stderr.close()
    if proc.stdout is not None:
        proc.stdout.close()
    rc = proc.wait()
    if check and rc != 0:
        raise CommandFailed(args, rc, _tail(err), hint=hint)


def terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a spawned program: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired
Popen = subprocess.Popen


def tool_version(tool: str) -> str:
    """First line of `tool --version`, for result.json and bug reports."""
    try:
        return run([tool, "--version"]).out.splitlines()[0].strip()
    except (CommandFailed, ToolMissing, IndexError):
        return "unknown"


def is_root() -> bool:
    return os.geteuid() == 0


def executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
