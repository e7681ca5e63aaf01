"""Where a customization writes: an ostree deployment checkout, its stateroot's /var, and /boot.

Paths are given as the booted system sees them (`/etc/hostname`, `/root/.ssh`, `/usr/local/bin/x`) and mapped
to the directory that holds them before boot: /etc is the deployment's, /var, /home, /root, /usr/local, /opt,
/srv and /mnt live in the stateroot's var (ostree links them there), /boot is the boot partition's tree.
The image is not trusted: nothing is written through a symlink it ships (an absolute link would point into
the build host), and every file appears under its final name only when complete.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BlueprintError

# Top-level directories that an ostree system keeps in the stateroot's /var (the deployment links them there).
VAR_LINKED = {"home": "home", "root": "roothome", "opt": "opt", "srv": "srv", "mnt": "mnt"}


@dataclass(frozen=True)
class Target:
    deploy_root: Path
    var_root: Path
    boot_root: Path | None
    # False for the plan-time view of an image (builder/customize/image_view.py): its /var is only seeded
    # when it is deployed, so what is under /var cannot be checked yet.
    var_known: bool = True

    def known(self, path: str) -> bool:
        """Whether this target can tell what is at `path` (in the image) now."""
        return self.var_known or self.locate(path)[0] != self.var_root

    def locate(self, path: str) -> tuple[Path, Path]:
        """(base directory, file) holding the booted system's absolute `path`."""
        parts = [p for p in path.split("/") if p]
        if not path.startswith("/") or any(p in (".", "..") for p in parts):
            raise BlueprintError(f"{path!r} is not an absolute, canonical path")
        if parts[:1] == ["etc"]:
            return self.deploy_root, self.deploy_root.joinpath(*parts)
        if parts[:1] == ["var"]:
            return self.var_root, self.var_root.joinpath(*parts[1:])
        if parts[:2] == ["usr", "local"]:
            return self.var_root, self.var_root.joinpath("usrlocal", *parts[2:])
        if parts[:1] and parts[0] in VAR_LINKED:
            return self.var_root, self.var_root.joinpath(VAR_LINKED[parts[0]], *parts[1:])
        if parts[:1] == ["boot"]:
            if self.boot_root is None:
                raise BlueprintError(f"cannot write {path}: this build has no /boot tree")
            return self.boot_root, self.boot_root.joinpath(*parts[1:])
        raise BlueprintError(
            f"cannot write {path}: only /etc, /var and what ostree keeps in /var are writable"
        )

    def host(self, path: str) -> Path:
        return self.locate(path)[1]

    def image(self, path: str) -> Path:
        """A path inside the deployment for reading what the image ships (/usr, /etc)."""
        return self.deploy_root.joinpath(*[p for p in path.split("/") if p not in ("", ".", "..")])

    def check_writable(self, path: str) -> Path:
        """The host path for `path`, refused when a directory on the way is a symlink in the image."""
        return self._check_no_symlink(path)

    def _check_no_symlink(self, path: str) -> Path:
        base, host = self.locate(path)
        current = base
        for part in host.relative_to(base).parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise BlueprintError(
                    f"cannot write {path}: {current.relative_to(base)} is a symlink in the image",
                    hint="the image's layout is unexpected; imgbuild does not write through symlinks",
                )
        return host

    def mkdir(
        self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, *, parents: bool = True
    ) -> bool:
        """Create a directory (and its missing parents, as root 0755); False if it already existed."""
        host = self._check_no_symlink(path)
        if host.is_symlink() or (host.exists() and not host.is_dir()):
            raise BlueprintError(f"cannot create directory {path}: something else is there in the image")
        if host.is_dir():
            return False
        parent = path.rsplit("/", 1)[0] or "/"
        if not host.parent.is_dir():
            if not parents:
                raise BlueprintError(f"cannot create directory {path}: {parent} does not exist in the image")
            self.mkdir(parent, 0o700 if parent == "/root" else 0o755)
        host.mkdir(mode=0o700)
        chown(host, uid, gid)
        host.chmod(mode)
        return True

    def write(self, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        """Write a whole file beside its final name, then rename it over whatever was there."""
        host = self._check_no_symlink(path)
        if not host.parent.is_dir():
            parent = path.rsplit("/", 1)[0] or "/"
            self.mkdir(parent, 0o700 if parent == "/root" else 0o755)
        if host.is_dir() and not host.is_symlink():
            raise BlueprintError(f"cannot write {path}: it is a directory in the image")
        fd, temporary = tempfile.mkstemp(dir=host.parent, prefix=f".{host.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            chown(Path(temporary), uid, gid)
            Path(temporary).chmod(mode)
            Path(temporary).replace(host)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def symlink(self, path: str, points_to: str) -> None:
        """Make `path` a symlink to `points_to`, replacing a file or link that was there."""
        host = self._check_no_symlink(path)
        if not host.parent.is_dir():
            self.mkdir(path.rsplit("/", 1)[0] or "/")
        if host.is_dir() and not host.is_symlink():
            raise BlueprintError(f"cannot make {path} a link: it is a directory in the image")
        temporary = host.parent / f".{host.name}.imgbuild-link"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(points_to)
        temporary.replace(host)

    def read_text(self, path: str) -> str | None:
        """A file the booted system will see at `path` (its deployment or /var copy), None if absent."""
        host = self.host(path) if not path.startswith("/usr/") else self.image(path)
        if host.is_symlink() or not host.is_file():
            return None
        return host.read_text(encoding="utf-8", errors="replace")


def chown(path: Path, uid: int, gid: int) -> None:
    """Set the owner as the image will see it; only root can give files away (a build runs as root)."""
    if os.geteuid() == 0:
        os.chown(path, uid, gid, follow_symlinks=False)
