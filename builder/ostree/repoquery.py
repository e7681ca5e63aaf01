"""Read-only questions to an ostree repository: does it have a commit, what is in a commit's tree.

The one place that reads files out of a commit through libostree without a checkout (the planner's facts,
the image's own boot settings, deploy's pre-flight checks).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError
from builder.ostree.gi import Gio, GLib, OSTree, open_repo

_NOFOLLOW = Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS


class CommitMissing(ImgbuildError):
    """The commit to read is not in the repository."""


def has_commit(repo: Path, commit: str) -> bool:
    if not (repo / "config").exists():
        return False
    try:
        ok, _, state = open_repo(repo).load_commit(commit)
    except GLib.Error:
        return False
    return bool(ok) and not (state & OSTree.RepoCommitState.PARTIAL)


class CommitTree:
    """Files of a commit, read through libostree without checking it out."""

    def __init__(self, repo: Path, commit: str) -> None:
        self._repo = open_repo(repo)
        try:
            ok, self._root, _ = self._repo.read_commit(commit, None)
        except GLib.Error:
            ok = False
        if not ok:
            raise CommitMissing(f"commit {commit} is not in {repo}", hint="import the image first")

    def _file(self, path: str) -> Any:
        return self._root.resolve_relative_path(path.strip("/"))

    def _type(self, path: str) -> Any:
        f = self._file(path)
        if not f.query_exists(None):
            return None
        return f.query_file_type(_NOFOLLOW, None)

    def exists(self, path: str) -> bool:
        return bool(self._file(path).query_exists(None))

    def is_dir(self, path: str) -> bool:
        return bool(self._type(path) == Gio.FileType.DIRECTORY)

    def is_regular(self, path: str) -> bool:
        return bool(self._type(path) == Gio.FileType.REGULAR)

    def listdir(self, path: str) -> list[str]:
        if not self.is_dir(path):
            return []
        names = []
        for info in self._file(path).enumerate_children("standard::name", _NOFOLLOW, None):
            names.append(str(info.get_name()))
        return sorted(names)

    def read_bytes(self, path: str) -> bytes | None:
        """The content of a regular file (symlinks are not followed), or None."""
        if not self.is_regular(path):
            return None
        # g_file_load_contents() trips over the plain GInputStream an OstreeRepoFile returns, and one
        # read_bytes() may return less than asked: read until the end.
        stream = self._file(path).read(None)
        chunks = []
        try:
            while chunk := bytes(stream.read_bytes(65536, None).get_data()):
                chunks.append(chunk)
        finally:
            stream.close(None)
        return b"".join(chunks)

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", "replace")

    def symlink_target(self, path: str) -> str | None:
        if self._type(path) != Gio.FileType.SYMBOLIC_LINK:
            return None
        info = self._file(path).query_info("standard::symlink-target", _NOFOLLOW, None)
        return str(info.get_symlink_target())

    def copy(self, path: str, dest: Path) -> int:
        """Copy `path` (a regular file, a symlink as it is, or a directory with everything below it) to
        `dest`; return how many entries were copied (0 when the commit has no such path)."""
        kind = self._type(path)
        if kind == Gio.FileType.SYMBOLIC_LINK:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(self.symlink_target(path) or "")
            return 1
        if kind == Gio.FileType.REGULAR:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.read_bytes(path) or b"")
            return 1
        if kind != Gio.FileType.DIRECTORY:
            return 0
        dest.mkdir(parents=True, exist_ok=True)
        return 1 + sum(self.copy(f"{path.rstrip('/')}/{name}", dest / name) for name in self.listdir(path))

    def extract(self, dest: Path, files: Iterable[str], dirs: Iterable[str] = ()) -> None:
        """Copy the regular files `files`, and the regular files directly in `dirs`, to the same paths in
        `dest`."""
        wanted = [*files, *(f"{d.strip('/')}/{name}" for d in dirs for name in self.listdir(d))]
        for path in wanted:
            data = self.read_bytes(path)
            if data is not None:
                target = dest / path.strip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
