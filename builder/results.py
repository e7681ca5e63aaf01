"""The contract of result.json (builder/schemas/result.schema.json, documented in docs/results.md).

The runner writes result.json; CI systems and the service read it. The schema is shipped in the package so
that consumers and the tests check the same shape.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).with_name("schemas") / "result.schema.json"


@functools.cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def problems(result: Any) -> list[str]:
    """Every way `result` departs from the schema, one line each (empty when it conforms)."""
    validator = jsonschema.Draft202012Validator(schema())
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(result), key=lambda e: list(map(str, e.absolute_path)))
    ]
