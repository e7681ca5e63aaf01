"""Errors the CLI turns into one line and exit 2, wherever they come from: argument types and paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from builder import run
from builder.cli import main
from builder.paths import PROJECT_ROOT


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


@pytest.mark.parametrize("smp", ["0", "two", "65"])
def test_bad_boot_cpu_count(smp: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", "disk.qcow2", "--smp", smp]) == 2
    assert f"{smp!r} is not a number of CPUs from 1 to 64" in _one_error_line(capsys)


def test_unusable_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--socket", "/proc/imgbuild-no-such-dir/api.socket", "--state", str(tmp_path / "state")]
    assert main(argv) == 2
    assert (
        _one_error_line(capsys)
        == "imgbuild: error: cannot use /proc/imgbuild-no-such-dir: No such file or directory"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["blueprint", "show", "blueprints/examples/everything-applied.toml", "--output-format", "json"],
    ],
    ids=["argparse", "command"],
)
def test_broken_pipe_is_quiet_exit_141(argv: list[str]) -> None:
    """`imgbuild ... | head`: the reader is gone. A real pipe whose read end is closed before imgbuild writes
    (so the write fails every time, not only when head wins a race)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "wb") as stdout:
        result = run.run(
            [sys.executable, "-m", "builder", *argv],
            stdout=stdout,
            check=False,
            cwd=PROJECT_ROOT,
            env={"PYTHONPATH": str(PROJECT_ROOT)},
        )
    assert (result.returncode, result.stderr) == (141, b"")


def test_broken_pipe_through_head(tmp_path: Path) -> None:
    """The same through a shell pipeline, as users type it; the output is larger than a pipe's buffer, so
    head is gone before imgbuild has written it all."""
    big = tmp_path / "big.toml"
    big.write_text("".join(f'[[customizations.group]]\nname = "g{i}"\n' for i in range(20000)))
    script = f'{sys.executable} -m builder blueprint show {big} | head -n 1; echo "${{PIPESTATUS[0]}}" >&2'
    result = run.run(
        ["bash", "-c", script], check=False, cwd=PROJECT_ROOT, env={"PYTHONPATH": str(PROJECT_ROOT)}
    )
    assert result.out.count("\n") == 1  # head's one line
    assert result.stderr.decode().strip() == "141"
