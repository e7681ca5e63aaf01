"""Seeding the stateroot's /var, which ostree 2022.7 leaves as os-init's stub (research/ostree.md §4).

Newer ostree copies the commit's /var into an empty stateroot var, and osbuild's fillvar stage creates
/var/home, /var/roothome... by running systemd-tmpfiles for a few prefixes. Here no program of the image
may run (the target may be another architecture), so:

1. the commit's own var/ and the importer's usr/share/factory/var are copied into the stateroot var,
   keeping owners, modes, xattrs, symlinks and hardlinks, and never replacing what exists;
2. the image's tmpfiles.d lines for /var (types d D v q Q L C) are applied for paths that do not exist,
   with users and groups looked up in the image's own passwd and group files;
3. the directories that the image's top-level symlinks point to in /var (home -> var/home...) are made.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.ostree.deploy import Deployment

log = logging.getLogger(__name__)

VAR_SOURCES = ("var", "usr/share/factory/var")
TMPFILES_DIRS = ("usr/lib/tmpfiles.d", "usr/etc/tmpfiles.d", "etc/tmpfiles.d")  # later ones override
PASSWD_FILES = ("etc/passwd", "usr/etc/passwd", "usr/lib/passwd")  # usr/lib: nss-altfiles images
GROUP_FILES = ("etc/group", "usr/etc/group", "usr/lib/group")
DIRECTORY_TYPES = frozenset("dDvqQ")
# /var/run and /var/lock are symlinks into /run, made by os-init.
SKIPPED_PREFIXES = ("/var/run", "/var/lock")
PRIVATE_DIRS = {"roothome": 0o700}


@dataclass(frozen=True)
class TmpfilesLine:
    type: str  # d D v q Q L C (modifiers stripped)
    path: str
    mode: int | None
    user: str | None
    group: str | None
    argument: str | None


def _field(value: str) -> str | None:
    return None if value in ("-", "") else value


def parse_tmpfiles(text: str) -> Iterator[TmpfilesLine]:
    """The lines of a tmpfiles.d file that create something under /var and need no specifier expansion."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 6)
        if len(fields) < 2:
            continue
        kind, path = fields[0], fields[1].strip('"')
        letter, modifiers = kind[0], kind[1:]
        if letter not in DIRECTORY_TYPES and letter not in "LC":
            continue
        if "^" in modifiers or "$" in modifiers:  # credentials, or removal only
            continue
        if "%" in path or not (path == "/var" or path.startswith("/var/")):
            continue
        if any(path == p or path.startswith(p + "/") for p in SKIPPED_PREFIXES):
            continue
        padded = [*fields[2:], "-", "-", "-", "-", "-"]
        mode_text, user, group, argument = padded[0], padded[1], padded[2], " ".join(fields[6:7]) or "-"
        mode = None
        if _field(mode_text) is not None:
            try:
                mode = int(mode_text.lstrip("~:"), 8)
            except ValueError:
                continue
        arg = _field(argument)
        if arg is not None and "%" in arg:
            continue
        yield TmpfilesLine(letter, path, mode, _field(user), _field(group), arg)


def _tmpfiles_lines(tree: Path) -> list[TmpfilesLine]:
    # One file per name, the last directory winning; files in name order; the first line for a path wins.
    files: dict[str, Path] = {}
    for directory in TMPFILES_DIRS:
        base = tree / directory
        if base.is_dir():
            for conf in base.glob("*.conf"):
                files[conf.name] = conf
    seen: set[str] = set()
    lines: list[TmpfilesLine] = []
    for name in sorted(files):
        path = files[name]
        if path.is_symlink() and str(path.readlink()) == "/dev/null":  # masked
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for entry in parse_tmpfiles(text):
            if entry.path not in seen:
                seen.add(entry.path)
                lines.append(entry)
    return lines


def _id_table(tree: Path, files: Iterable[str]) -> dict[str, int]:
    table: dict[str, int] = {}
    for relative in files:
        path = tree / relative
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdigit():
                table.setdefault(fields[0], int(fields[2]))
    return table


def _resolve(name: str | None, table: dict[str, int]) -> int | None:
    if name is None:
        return 0
    if name.isdigit():
        return int(name)
    return table.get(name)


def _copy_metadata(src: Path, dst: Path, st: os.stat_result) -> None:
    is_link = stat.S_ISLNK(st.st_mode)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    for name in os.listxattr(src, follow_symlinks=False):
        os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    if not is_link:
        dst.chmod(stat.S_IMODE(st.st_mode))  # after chown, which clears setuid bits
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


class _Copier:
    """Merges a tree into a destination without replacing anything that exists there."""

    def __init__(self) -> None:
        self.links: dict[tuple[int, int], Path] = {}
        self.copied = 0

    def copy_tree(self, src: Path, dst: Path) -> None:
        with os.scandir(src) as entries:
            children = sorted(entries, key=lambda e: e.name)
        for entry in children:
            self.copy_entry(Path(entry.path), dst / entry.name)

    def copy_entry(self, src: Path, dst: Path) -> None:
        st = src.lstat()
        if os.path.lexists(dst):
            if stat.S_ISDIR(st.st_mode) and dst.is_dir() and not dst.is_symlink():
                self.copy_tree(src, dst)  # merge into what exists, keeping its own metadata
            return
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            dst.mkdir(mode=0o700)
            self.copy_tree(src, dst)
        elif stat.S_ISLNK(mode):
            dst.symlink_to(src.readlink())
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                os.link(self.links[key], dst)
                self.copied += 1
                return
            shutil.copyfile(src, dst, follow_symlinks=False)
            if st.st_nlink > 1:
                self.links[key] = dst
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(dst, mode, st.st_rdev)
        else:  # sockets belong to running programs
            return
        _copy_metadata(src, dst, st)
        self.copied += 1


def _make_parents(var: Path, path: Path) -> None:
    missing = []
    parent = path.parent
    while parent != var and not os.path.lexists(parent):
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o755)
        os.chown(directory, 0, 0)


def _apply_tmpfiles(deploy_root: Path, var: Path, lines: Iterable[TmpfilesLine]) -> int:
    users = _id_table(deploy_root, PASSWD_FILES)
    groups = _id_table(deploy_root, GROUP_FILES)
    made = 0
    for line in lines:
        target = var / line.path.removeprefix("/var").lstrip("/")
        if target == var or os.path.lexists(target):
            continue
        uid, gid = _resolve(line.user, users), _resolve(line.group, groups)
        if uid is None or gid is None:
            log.warning("tmpfiles: unknown user or group for %s, left to systemd-tmpfiles", line.path)
            continue
        _make_parents(var, target)
        if line.type in DIRECTORY_TYPES:
            target.mkdir(mode=0o700)
            os.chown(target, uid, gid)
            target.chmod(0o755 if line.mode is None else line.mode)
        elif line.type == "L":
            target.symlink_to(line.argument or f"/usr/share/factory{line.path}")
            os.chown(target, uid, gid, follow_symlinks=False)
        elif line.type == "C":
            source = PurePosixPath(line.argument or f"/usr/share/factory{line.path}")
            source_path = deploy_root / str(source).lstrip("/")
            if not source.is_absolute() or str(source).startswith("/var") or not os.path.lexists(source_path):
                continue
            copier = _Copier()
            copier.copy_entry(source_path, target)
        made += 1
    return made


def _symlinked_var_dirs(deploy_root: Path) -> Iterator[str]:
    """Targets in /var of the image's symlinks home -> var/home, usr/local -> ../var/usrlocal..."""
    for link in [*deploy_root.iterdir(), deploy_root / "usr" / "local"]:
        if not link.is_symlink():
            continue
        target = PurePosixPath(link.readlink())
        absolute = (
            target
            if target.is_absolute()
            else PurePosixPath("/", link.parent.relative_to(deploy_root), target)
        )
        parts: list[str] = []
        for part in absolute.parts[1:]:
            if part == "..":
                if parts:
                    parts.pop()
            elif part != ".":
                parts.append(part)
        if len(parts) >= 2 and parts[0] == "var":
            yield "/".join(parts[1:])


def seed_var(deployment: Deployment) -> None:
    """Fill the stateroot's /var the way a current ostree, bootc and osbuild's fillvar would."""
    var = deployment.var
    copier = _Copier()
    for relative in VAR_SOURCES:
        source = deployment.path / relative
        if source.is_dir() and not source.is_symlink():
            copier.copy_tree(source, var)
    made = _apply_tmpfiles(deployment.path, var, _tmpfiles_lines(deployment.path))
    for relative in _symlinked_var_dirs(deployment.path):
        target = var / relative
        if not os.path.lexists(target):
            _make_parents(var, target)
            target.mkdir(mode=PRIVATE_DIRS.get(relative, 0o755))
            os.chown(target, 0, 0)
            target.chmod(PRIVATE_DIRS.get(relative, 0o755))
            made += 1
    log.info("seeded %s: %d entries copied from the commit, %d created", var, copier.copied, made)
