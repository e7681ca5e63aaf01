"""Reading a blueprint: TOML, JSON or YAML text -> plain document -> schema -> typed Blueprint.

Every way a blueprint can be wrong ends in one BlueprintError line naming the file, the line when known, the
key path and the problem, with a hint. Nothing else escapes (the fuzz test holds the loader to that).
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
import yaml

from builder.blueprint.document import from_document
from builder.blueprint.locate import locator_for
from builder.blueprint.model import Blueprint
from builder.blueprint.problem import KeyPath, Problem, format_path
from builder.blueprint.schema import SCHEMA_HINT, schema_problems
from builder.errors import BlueprintError

FORMATS = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}
MAX_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64


class _SyntaxProblem(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# libyaml's parser when PyYAML has it (Debian's and the wheels do): the same documents, several times faster.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that refuses a key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                duplicate = False  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for key, value in pairs:
        if key in table:
            raise ValueError(f"duplicate key {key!r}")
        table[key] = value
    return table


def _parse_toml(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        raise _SyntaxProblem(f"not valid TOML: {message}", int(match.group(1)) if match else None) from e


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as e:
        raise _SyntaxProblem(f"not valid JSON: {e.msg} (column {e.colno})", e.lineno) from e
    except ValueError as e:  # a duplicate key, from _json_object
        raise _SyntaxProblem(f"not valid JSON: {e}", None) from e


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _SyntaxProblem(f"not valid YAML: {problem}", mark.line + 1 if mark else None) from e


PARSERS: dict[str, Callable[[str], Any]] = {"toml": _parse_toml, "json": _parse_json, "yaml": _parse_yaml}


def sniff_format(text: str) -> str:
    """For standard input: JSON if it starts with `{`, else TOML if it parses, else YAML."""
    if text.lstrip().startswith("{"):
        return "json"
    try:
        tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        try:
            if isinstance(yaml.load(text, Loader=_UniqueKeyLoader), dict):
                return "yaml"
        except (yaml.YAMLError, RecursionError, ValueError):
            pass
    return "toml"


def _plain(value: Any, path: KeyPath, budget: list[int]) -> Any:
    """A copy holding only JSON types; refuses dates, odd keys, and documents too big or too deep."""
    budget[0] -= 1
    if budget[0] < 0:
        raise Problem(path, f"the document has more than {MAX_NODES} values")
    if len(path) > MAX_DEPTH:
        raise Problem(path, f"the document is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        table = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Problem(path, f"keys must be strings, not {short_type(key)} {key!r:.40}")
            table[key] = _plain(item, (*path, key), budget)
        return table
    if isinstance(value, list):
        return [_plain(item, (*path, index), budget) for index, item in enumerate(value)]
    if isinstance(value, datetime.date | datetime.time):
        raise Problem(path, "dates and times are not accepted: quote the value to make it a string")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise Problem(path, f"{short_type(value)} values are not accepted")


def short_type(value: object) -> str:
    return type(value).__name__


def _error(
    origin: str, line: int | None, path: KeyPath | None, message: str, hint: str | None
) -> BlueprintError:
    where = f"{origin}:{line}" if line is not None else origin
    what = f"{format_path(path)}: " if path is not None else ""
    text = f"{where}: {what}{message}".replace("\r", "\\r").replace("\n", "\\n")
    return BlueprintError(text, hint=hint or SCHEMA_HINT)


def parse_blueprint(text: str, fmt: str, origin: str = "<blueprint>") -> Blueprint:
    fmt = FORMATS.get(f".{fmt.lower()}", fmt.lower())
    if fmt not in PARSERS:
        raise BlueprintError(f"{origin}: unknown blueprint format {fmt!r}", hint="use toml, json or yaml")
    if len(text) > MAX_BYTES:
        raise _error(origin, None, None, f"larger than {MAX_BYTES // 1024 // 1024} MiB", "is it a blueprint?")
    try:
        raw = PARSERS[fmt](text)
    except _SyntaxProblem as e:
        raise _error(origin, e.line, None, e.message, "fix the syntax at that line") from None
    except RecursionError:
        raise _error(origin, None, None, "nested too deeply", None) from None
    if raw is None and fmt == "yaml":
        raw = {}  # an empty YAML file is an empty blueprint, as an empty TOML file is
    prefix: KeyPath = ()
    if isinstance(raw, dict) and list(raw) == ["blueprint"] and isinstance(raw["blueprint"], dict):
        prefix, raw = ("blueprint",), raw["blueprint"]  # bib's legacy {"blueprint": {...}} wrapper
    locate = locator_for(text, fmt)
    try:
        if not isinstance(raw, dict):
            raise Problem((), f"the document must be a table of keys, not {short_type(raw)}")
        document = _plain(raw, (), [MAX_NODES])
        problems = list(schema_problems(document))
        if problems:
            raise min(problems, key=lambda p: (locate((*prefix, *p.path)) or sys.maxsize, len(p.path)))
        return from_document(document)
    except Problem as e:
        line = locate((*prefix, *e.path))
        raise _error(origin, line, (*prefix, *e.path) if e.path else None, e.message, e.hint) from None


def load_blueprint(source: str | Path, fmt: str | None = None) -> Blueprint:
    """Read a blueprint from a file or from standard input (`-`).

    The format is `fmt` if given, else the file's extension; standard input and a file with another
    extension (bootc-image-builder's /config) are sniffed.
    """
    if str(source) == "-":
        data = sys.stdin.buffer.read(MAX_BYTES + 1)
        origin = "<stdin>"
    else:
        path = Path(source)
        origin = str(path)
        fmt = fmt or FORMATS.get(path.suffix.lower())
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise BlueprintError(f"{origin}: cannot read the blueprint: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _error(origin, None, None, f"not UTF-8 text (byte {e.start})", None) from None
    return parse_blueprint(text, fmt or sniff_format(text), origin)


def dump_toml(bp: Blueprint) -> str:
    return tomli_w.dumps(bp.to_dict())
