"""blueprints/schema.json: loading it once and turning its first error into one line."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

import blueprints
from builder.blueprint.problem import KeyPath, Problem

# The top-level blueprints/ folder is a package so that an installed imgbuild (a wheel) carries the schema.
SCHEMA_PATH = Path(blueprints.__file__).with_name("schema.json")
SCHEMA_HINT = "see blueprints/schema.json and the examples in blueprints/examples/"

_JSON_TYPES = {
    "object": "a table",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


@functools.cache
def schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


@functools.cache
def validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def type_of(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "null" if value is None else type(value).__name__


def short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _annotation(error: ValidationError, key: str) -> str | None:
    """The deepest `key` (x-error, x-refused) on the schema nodes the error's schema path went through."""
    node: Any = schema()
    found: str | None = None
    for step in error.schema_path:
        if isinstance(node, dict) and step not in node and "$ref" in node:
            node = schema()["$defs"][
                node["$ref"].rsplit("/", 1)[-1]
            ]  # jsonschema leaves $ref out of the path
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and key in node:
            found = node[key]
    error_schema: Any = error.schema
    if isinstance(error_schema, dict) and key in error_schema:
        found = error_schema[key]
    return found


def _unknown_key(error: ValidationError) -> Problem:
    instance: Any = error.instance
    error_schema: Any = error.schema
    known = list(error_schema.get("properties", {}))
    extra = next(k for k in instance if k not in known)
    path: KeyPath = (*error.absolute_path, extra)
    lowered = {k.lower(): k for k in known}
    if extra.lower() in lowered:
        hint = f"keys are case-sensitive: write {lowered[extra.lower()]!r}"
    elif close := difflib.get_close_matches(extra, known, n=1):
        hint = f"did you mean {close[0]!r}?"
    else:
        hint = f"the keys allowed here are: {', '.join(known)}"
    return Problem(path, f"unknown key {short(extra)}", hint)


def problem_of(error: ValidationError) -> Problem:
    path: KeyPath = tuple(error.absolute_path)
    refused = _annotation(error, "x-refused")
    if refused is not None:
        return Problem(path, f"refused: {refused}", "remove it from the blueprint")
    if error.validator == "additionalProperties":
        return _unknown_key(error)
    custom = _annotation(error, "x-error")
    value: Any = error.instance
    expected: Any = error.validator_value
    if error.validator == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_JSON_TYPES.get(n, n) for n in names)
        return Problem(path, f"must be {wanted}, not {type_of(value)}", SCHEMA_HINT)
    if error.validator == "required":
        missing = next(k for k in expected if k not in value)
        return Problem((*path, missing), f"{missing} is required", SCHEMA_HINT)
    if custom is not None:
        return Problem(path, f"{short(value)} {custom}" if not isinstance(value, dict | list) else custom)
    if error.validator == "enum":
        choices = ", ".join(str(c) for c in expected)
        return Problem(path, f"{short(value)} must be one of: {choices}", SCHEMA_HINT)
    if error.validator in ("minimum", "maximum"):
        bound = "at least" if error.validator == "minimum" else "at most"
        return Problem(path, f"must be {bound} {expected}, not {short(value)}")
    if error.validator == "minItems":
        return Problem(path, "must not be empty")
    if error.validator == "maxLength":
        return Problem(path, f"must be at most {expected} characters long")
    return Problem(path, error.message.splitlines()[0][:200], SCHEMA_HINT)


def schema_problems(document: Mapping[str, Any]) -> Iterable[Problem]:
    return (problem_of(e) for e in validator().iter_errors(document))
