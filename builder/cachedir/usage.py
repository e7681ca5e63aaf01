"""Bytes on disk as `du -sb` counts them: the apparent size (st_size) of every file, directory and symlink,
each inode once, however many names it has (ostree objects may be hard-linked)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

Seen = set[tuple[int, int]]


def _size(st: os.stat_result, seen: Seen) -> int:
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return 0
    seen.add(key)
    return st.st_size


def tree_size(path: Path, seen: Seen | None = None) -> int:
    """`du -sb path`; inodes already in `seen` are not counted again (and those counted here are added)."""
    seen = set() if seen is None else seen
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    total = _size(st, seen)
    if not path.is_dir() or path.is_symlink():
        return total
    stack = [str(path)]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:  # removed while counted
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            total += _size(st, seen)
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


def files_size(paths: Iterable[Path], seen: Seen | None = None) -> int:
    """The bytes of these files (missing ones count 0), each inode once."""
    seen = set() if seen is None else seen
    total = 0
    for path in paths:
        try:
            total += _size(path.lstat(), seen)
        except FileNotFoundError:
            continue
    return total
