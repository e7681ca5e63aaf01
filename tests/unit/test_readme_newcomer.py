"""The README's newcomer sections: every `imgbuild ...` command line they show parses with the real parser,
and the blueprint they show is a valid one."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from builder.blueprint import load_blueprint
from builder.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = (
    "From a Containerfile to a booted system",
    "The cache",
    "Troubleshooting",
    "Shell completion and man page",
)


def _section(title: str) -> str:
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match is not None, title
    return match.group(1)


def _blocks(text: str) -> list[str]:
    return list(re.findall(r"^ *```\n(.*?)^ *```", text, re.S | re.M))


def _command_lines() -> list[str]:
    lines = []
    for title in SECTIONS:
        for block in _blocks(_section(title)):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith("imgbuild "):
                    lines.append(line.split(" > ", 1)[0].split(" # ")[0])
    return lines


def test_the_sections_show_the_newcomer_path() -> None:
    commands = [shlex.split(line)[1] for line in _command_lines()]
    for wanted in ("example", "qcow2", "boot", "cache", "completion", "man"):
        assert wanted in commands


@pytest.mark.parametrize("line", _command_lines())
def test_command_line_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert callable(args.func)


def test_the_blueprint_is_valid(tmp_path: Path) -> None:
    (toml,) = [b for b in _blocks(_section(SECTIONS[0])) if "[[customizations.user]]" in b]
    path = tmp_path / "login.toml"
    path.write_text("\n".join(line.strip() for line in toml.splitlines()) + "\n")
    blueprint = load_blueprint(str(path))
    assert [user.name for user in blueprint.users] == ["me"]
