"""Helpers for the tests of the installable package: a clean copy of the checkout, its wheel, a fresh venv.

Not a test module: shared by tests/unit/test_package.py and tests/vm/test_wheel_install.py.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from builder import run

ROOT = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    """The checkout's files as a fresh clone would have them (tracked and new, not ignored ones)."""
    out = run.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).out
    return sorted(name for name in out.split("\0") if name and (ROOT / name).exists())


def clean_copy(dest: Path) -> Path:
    """A copy of the checkout without caches, venvs, build directories or anything git ignores."""
    for name in tracked_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    return dest


def build_wheel(source: Path, dest: Path) -> Path:
    """`pip wheel` of a source tree (setuptools from the test venv: no network needed for the build)."""
    run.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dest, source],
        env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=600,
    )
    (wheel,) = dest.glob("imgbuild-*.whl")
    return wheel


def fresh_venv(wheel: Path, dest: Path) -> Path:
    """A new venv from Debian's Python (as the README says) with the wheel and its dependencies installed."""
    run.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", dest], timeout=300)
    run.run(
        [dest / "bin" / "python", "-m", "pip", "install", "-q", wheel],
        env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=600,
    )
    return dest / "bin" / "imgbuild"
