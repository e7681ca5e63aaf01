"""A problem found in a blueprint document, located by its key path before a line is known."""

from __future__ import annotations

KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    """`customizations.user[1].groups` from ("customizations", "user", 1, "groups")."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(document)"


class Problem(Exception):
    def __init__(self, path: KeyPath, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.hint = hint
