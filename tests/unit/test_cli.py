"""Errors the CLI turns into one line and exit 2, wherever they come from: argument types and paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.cli import main


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("hint: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "argv", [["boot", "disk.qcow2", "--arch", "sparc"], ["plan", "qcow2", "x", "--arch", "mips"]]
)
def test_bad_architecture_argument(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "unsupported architecture" in _one_error_line(capsys)


def test_unusable_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--socket", "/proc/imgbuild-no-such-dir/api.socket", "--state", str(tmp_path / "state")]
    assert main(argv) == 2
    assert (
        _one_error_line(capsys)
        == "imgbuild: error: cannot use /proc/imgbuild-no-such-dir: No such file or directory"
    )
