"""The one place that loads libostree through PyGObject (Debian's gir1.2-ostree-1.0 and python3-gi)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.errors import ToolMissing

try:
    import gi

    gi.require_version("OSTree", "1.0")
    from gi.repository import Gio, GLib, OSTree
except (ImportError, ValueError) as e:  # pragma: no cover - depends on the host
    raise ToolMissing(
        f"libostree is not available to Python ({e})",
        hint="install python3-gi and gir1.2-ostree-1.0 and use the venv made with --system-site-packages "
        "(`make setup`)",
    ) from e

__all__ = ["GLib", "Gio", "OSTree", "create_repo", "open_repo"]


def open_repo(path: Path) -> Any:
    """Open an existing ostree repository."""
    repo = OSTree.Repo.new(Gio.File.new_for_path(str(path)))
    repo.open(None)
    return repo


def create_repo(path: Path, mode: Any) -> Any:
    """Create (or open, if it exists) an ostree repository in `mode` (an OSTree.RepoMode)."""
    path.mkdir(parents=True, exist_ok=True)
    repo = OSTree.Repo.new(Gio.File.new_for_path(str(path)))
    if (path / "config").exists():
        repo.open(None)
    else:
        repo.create(mode, None)
    return repo
