"""Read-only questions to an ostree repository: does it have a commit, what is in a commit's tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.ostree.gi import Gio, GLib, OSTree, open_repo


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
        _, self._root, _ = self._repo.read_commit(commit, None)

    def _file(self, path: str) -> Any:
        return self._root.resolve_relative_path(path.strip("/"))

    def exists(self, path: str) -> bool:
        return bool(self._file(path).query_exists(None))

    def is_dir(self, path: str) -> bool:
        f = self._file(path)
        if not f.query_exists(None):
            return False
        kind = f.query_file_type(Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None)
        return bool(kind == Gio.FileType.DIRECTORY)

    def listdir(self, path: str) -> list[str]:
        if not self.is_dir(path):
            return []
        names = []
        enum = self._file(path).enumerate_children(
            "standard::name", Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None
        )
        while (info := enum.next_file(None)) is not None:
            names.append(str(info.get_name()))
        return sorted(names)

    def read_text(self, path: str, limit: int = 1 << 20) -> str | None:
        f = self._file(path)
        if not f.query_exists(None):
            return None
        stream = f.read(None)
        try:
            data = stream.read_bytes(limit, None).get_data()
        finally:
            stream.close(None)
        return bytes(data).decode("utf-8", "replace")
