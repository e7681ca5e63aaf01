"""Where imgbuild keeps its state."""

from __future__ import annotations

import os
from pathlib import Path

# The checkout's root: examples and blueprints ship beside the package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """The content-addressed cache (OCI blobs, ostree repositories, stage outputs).

    IMGBUILD_CACHE overrides; otherwise $XDG_CACHE_HOME/imgbuild or ~/.cache/imgbuild.
    """
    env = os.environ.get("IMGBUILD_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "imgbuild"


def examples_dir() -> Path:
    """Where the built example OS images go (git-ignored); IMGBUILD_EXAMPLES overrides."""
    env = os.environ.get("IMGBUILD_EXAMPLES")
    return Path(env) if env else PROJECT_ROOT / ".cache" / "examples"
