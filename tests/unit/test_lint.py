"""The linters run as tests: ruff (lint and format) and mypy --strict over the whole tree."""

from __future__ import annotations

import sys
from pathlib import Path

from builder import run

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _check(argv: list[str]) -> None:
    result = run.run([str(BIN / argv[0]), *argv[1:]], cwd=ROOT, check=False)
    assert result.returncode == 0, result.out + result.stderr.decode()


def test_ruff_check() -> None:
    _check(["ruff", "check", "."])


def test_ruff_format() -> None:
    _check(["ruff", "format", "--check", "."])


def test_mypy_strict() -> None:
    _check(["mypy"])
