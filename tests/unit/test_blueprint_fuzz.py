"""The loader fuzzed: whatever the text, the only exception that leaves it is BlueprintError.

The default run feeds it 13,500 inputs: 1,500 examples in each of three tests (random text, random documents
built from the schema's keys, mutations of the examples), each read as TOML, JSON and YAML.
IMGBUILD_FUZZ_EXAMPLES changes the number of examples per test.
Documents the loader accepts must also survive the trip through to_dict() and back unchanged.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tomli_w
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.blueprint import load_blueprint, parse_blueprint
from builder.blueprint.schema import schema
from builder.errors import BlueprintError
from builder.paths import PROJECT_ROOT

EXAMPLES_PER_TEST = int(os.environ.get("IMGBUILD_FUZZ_EXAMPLES", "1500"))
FUZZ = settings(
    max_examples=EXAMPLES_PER_TEST,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _schema_keys() -> list[str]:
    keys: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema())
    return sorted(keys)


KEYS = _schema_keys()
INTERESTING_STRINGS = [
    "",
    "/",
    "/etc/foo",
    "/var/log",
    "/var",
    "/usr/bin/x",
    "/etc/../x",
    "etc/x",
    "/boot",
    "/boot/efi",
    "20 GiB",
    "512MiB",
    "1.5 GB",
    "0",
    "-1",
    "10 GiBs",
    "root",
    "wheel",
    "alice",
    "0644",
    "0999",
    "ext4",
    "xfs",
    "vfat",
    "swap",
    "none",
    "plain",
    "lvm",
    "btrfs",
    "gpt",
    "dos",
    "sshd",
    "x@.service",
    "1.0.0",
    "Europe/Berlin",
    "en_US.UTF-8",
    "$6$salt$hash",
    "e30=",
    "http://x.invalid/a.ign",
    "a'b",
    '"',
    "\x00",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.sampled_from(INTERESTING_STRINGS),
    st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)),
    max_leaves=12,
)


def _serialise(document: Any, fmt: str) -> str | None:
    try:
        if fmt == "toml":
            return tomli_w.dumps(document) if isinstance(document, dict) else None
        if fmt == "json":
            return json.dumps(document)
        return yaml.safe_dump(document)
    except (TypeError, ValueError):
        return None  # not expressible in that format (None in TOML, a non-dict top level...)


def _load_checked(text: str, fmt: str) -> None:
    try:
        bp = parse_blueprint(text, fmt, "<fuzz>")
    except BlueprintError as e:
        assert e.message and "\n" not in e.message
        return
    again = parse_blueprint(json.dumps(bp.to_dict()), "json")
    assert again == bp


FORMATS = ("toml", "json", "yaml")


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    for fmt in FORMATS:
        _load_checked(text, fmt)


@FUZZ
@given(
    st.fixed_dictionaries({}, optional={"name": scalars, "customizations": st.dictionaries(keys, documents)}),
)
def test_random_documents_near_the_schema(document: dict[str, Any]) -> None:
    for fmt in FORMATS:
        text = _serialise(document, fmt)
        if text is not None:
            _load_checked(text, fmt)


EXAMPLE_DOCUMENTS = [
    load_blueprint(p).to_dict() for p in sorted((PROJECT_ROOT / "blueprints" / "examples").glob("*.toml"))
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(EXAMPLE_DOCUMENTS))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            continue
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(documents)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(documents)
    return document


@FUZZ
@given(mutated_examples())
def test_mutated_examples(document: dict[str, Any]) -> None:
    for fmt in FORMATS:
        text = _serialise(document, fmt)
        if text is not None:
            _load_checked(text, fmt)
