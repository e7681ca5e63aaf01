"""Find the line of a key path in the blueprint's source text, so an error can name it.

TOML: tomllib gives no positions, so the source is scanned for table headers and `key =` lines. YAML (and
JSON, which PyYAML reads as YAML in all but corner cases): the composed node tree carries each node's line.
Locating is best effort: when it fails the error simply has no line number.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import yaml

from builder.blueprint.problem import KeyPath

Locator = Callable[[KeyPath], int | None]

_BARE_OR_QUOTED_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED_KEY = rf"{_BARE_OR_QUOTED_KEY}(?:\s*\.\s*{_BARE_OR_QUOTED_KEY})*"
_HEADER = re.compile(rf"\s*(\[\[?)\s*({_DOTTED_KEY})\s*\]\]?\s*(#.*)?$")
_ASSIGNMENT = re.compile(rf"\s*({_DOTTED_KEY})\s*=")
_KEY_PART = re.compile(_BARE_OR_QUOTED_KEY)


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = []
    for match in _KEY_PART.finditer(dotted):
        part = match.group(0)
        parts.append(part[1:-1] if part[:1] in "\"'" else part)
    return tuple(parts)


def toml_lines(text: str) -> dict[KeyPath, int]:
    """Map each table header and assignment of a TOML text to its 1-based line."""
    lines: dict[KeyPath, int] = {}
    array_counts: dict[tuple[str, ...], int] = {}
    table: KeyPath = ()
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if in_multiline is not None:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header:
            names = _split_key(header.group(2))
            if header.group(1) == "[[":
                index = array_counts.get(names, -1) + 1
                array_counts[names] = index
                # A nested array of tables belongs to the latest element of its parent arrays.
                table = (*_with_indices(names[:-1], array_counts), names[-1], index)
                lines.setdefault(table[:-1], number)
            else:
                table = _with_indices(names, array_counts)
            for length in range(1, len(table) + 1):  # [a.b.c] also says where a.b starts
                lines.setdefault(table[:length], number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment:
            lines.setdefault((*table, *_split_key(assignment.group(1))), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_multiline = quote
    return lines


def _with_indices(names: tuple[str, ...], array_counts: dict[tuple[str, ...], int]) -> KeyPath:
    path: list[str | int] = []
    for depth, name in enumerate(names):
        path.append(name)
        index = array_counts.get(names[: depth + 1])
        if index is not None:
            path.append(index)
    return tuple(path)


def toml_locator(text: str) -> Locator:
    known = toml_lines(text)

    def locate(path: KeyPath) -> int | None:
        for length in range(len(path), 0, -1):
            line = known.get(path[:length])
            if line is not None:
                return line
        return None

    return locate


def yaml_locator(text: str) -> Locator:
    """Lines from PyYAML's node tree; also used for JSON."""
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, RecursionError, ValueError):
        return lambda path: None

    def locate(path: KeyPath) -> int | None:
        node = root
        if node is None:
            return None
        line: int = node.start_mark.line + 1
        for part in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        line = key.start_mark.line + 1
                        child = value
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line

    return locate


def locator_for(text: str, fmt: str) -> Locator:
    return toml_locator(text) if fmt == "toml" else yaml_locator(text)
