"""Every hint text in builder/ and targets/, found in the source (a `hint=` keyword of any call), and the
options and commands of the real parsers they are checked against (tests/unit/test_cli_hints.py)."""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Hint:
    where: str  # file:line
    text: str  # f-string fields as {}


def _texts(node: ast.expr) -> Iterator[str]:
    """The strings an expression can give: constants, f-strings (fields as {}), both arms of `a if c else b`,
    concatenations, and `"x" or "y"` alternatives."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        yield "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    elif isinstance(node, ast.IfExp):
        yield from _texts(node.body)
        yield from _texts(node.orelse)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _texts(value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        for left in list(_texts(node.left)) or ["{}"]:
            for right in list(_texts(node.right)) or ["{}"]:
                yield left + right


def hints() -> list[Hint]:
    found = []
    for directory in ("builder", "targets"):
        for path in sorted((ROOT / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    for keyword in node.keywords:
                        if keyword.arg == "hint" and keyword.value is not None:
                            where = f"{path.relative_to(ROOT)}:{node.lineno}"
                            found += [Hint(where, text) for text in _texts(keyword.value)]
    return found


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]  # ("imgbuild", "compose", "start")
    options: frozenset[str]
    subcommands: frozenset[str]


def commands() -> dict[tuple[str, ...], Command]:
    table: dict[tuple[str, ...], Command] = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        subs: dict[str, argparse.ArgumentParser] = {}
        opts: set[str] = set()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                subs.update(action.choices)
            opts.update(action.option_strings)
        table[words] = Command(words, frozenset(opts), frozenset(subs))
        for name, child in subs.items():
            walk(child, (*words, name))

    walk(build_parser(), ("imgbuild",))
    return table


OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
INVOCATION = re.compile(r"\bimgbuild((?: [a-z][a-z0-9-]*)+)")
