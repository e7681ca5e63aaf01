"""The whole manifest checked before anything runs, from what each stage kind declares about itself.

Each stage kind (builder/stages/registry.py) declares:
  needs           facts an earlier stage must have made ("commit", "disk", "deployment")
  makes           facts it makes for later stages
  refers          option paths naming something made earlier: {"mounts[].partition": "filesystem"}
  defines         option paths naming what it makes: {"partitions[].name": "partition"}
  source_options  options that must equal the manifest's source: {"digest": "digest"}
  problems()      what is wrong with its options on their own (a partition layout that does not fit)
Namespaces are "partition", "filesystem" (a partition with a filesystem on it) and "pipeline" (an earlier
pipeline of the same manifest). Facts and names flow from stage to stage and from one pipeline to the next
in execution order, as the runner's BuildContext does. Option paths use `a.b` for nested objects and `[]`
for every item of a list.

The document has already passed the JSON Schemas, so every option named here has the declared shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from builder.errors import ManifestError

FACTS = {"commit": "the image's commit", "disk": "a disk", "deployment": "a deployment"}
HINT = "fix the manifest or regenerate it with `imgbuild plan`"


class Declarations(Protocol):
    """What the checker reads from a stage kind (StageKind's class attributes)."""

    @property
    def needs(self) -> tuple[str, ...]: ...
    @property
    def makes(self) -> tuple[str, ...]: ...
    @property
    def refers(self) -> Mapping[str, str]: ...
    @property
    def defines(self) -> Mapping[str, str]: ...
    @property
    def source_options(self) -> Mapping[str, str]: ...
    def problems(self, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]: ...


Lookup = Callable[[str], Declarations | None]


def _values(options: Any, path: str, prefix: str) -> Iterator[tuple[str, Any]]:
    """(the value's path, value) for each value at `path` ("a.b", "items[].name") inside `options`."""
    head, _, rest = path.partition(".")
    many = head.endswith("[]")
    key = head.removesuffix("[]")
    if not isinstance(options, Mapping) or key not in options:
        return
    value = options[key]
    items = list(enumerate(value)) if many and isinstance(value, list) else [(None, value)]
    for index, item in items:
        where = f"{prefix}.{key}" + (f"[{index}]" if index is not None else "")
        if rest:
            yield from _values(item, rest, where)
        else:
            yield where, item


@dataclass
class _State:
    """What the stages checked so far have made: facts (with who made them) and names per namespace."""

    facts: dict[str, str] = field(default_factory=dict)  # fact -> path of the stage that made it
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # namespace -> name -> stage path

    def known(self, namespace: str) -> dict[str, str]:
        return self.names.setdefault(namespace, {})


def _fail(where: str, what: str) -> ManifestError:
    return ManifestError(f"invalid manifest at {where}: {what}", hint=HINT)


def _makers(lookup: Lookup, kinds: tuple[str, ...], fact: str) -> str:
    found = []
    for name in kinds:
        declared = lookup(name)
        if declared is not None and fact in declared.makes:
            found.append(name)
    return ", ".join(found) or "no stage kind"


def _unknown(namespace: str, name: str, state: _State) -> str:
    known = state.known(namespace)
    if namespace == "partition":
        makers = sorted(set(known.values()))
        where = f" ({', '.join(f'disk.partition at {m}' for m in makers)} makes {', '.join(known)})"
        return f"no partition {name!r}" + (where if known else " (no earlier stage makes partitions)")
    if namespace == "filesystem":
        made = f"earlier stages make filesystems on {', '.join(known)}" if known else "no earlier mkfs"
        return f"no filesystem on partition {name!r} ({made})"
    return f"no {namespace} {name!r}" + (f" (earlier: {', '.join(known)})" if known else "")


def check_document(data: Mapping[str, Any], lookup: Lookup, kinds: tuple[str, ...]) -> None:
    """Raise ManifestError for the first problem, naming its path; `kinds` lists every known stage kind."""
    state = _State()
    source = data["source"]
    for p, pipeline in enumerate(data["pipelines"]):
        if pipeline["name"] in state.known("pipeline"):
            raise _fail(f"pipelines[{p}].name", f"a pipeline named {pipeline['name']!r} comes earlier")
        for s, stage in enumerate(pipeline["stages"]):
            where = f"pipelines[{p}].stages[{s}]"
            declared = lookup(stage["type"])
            if declared is None:
                raise _fail(f"{where}.type", f"unknown stage type {stage['type']!r}")
            _check_stage(
                where, stage["type"], stage.get("options", {}), declared, state, source, lookup, kinds
            )
        state.known("pipeline")[pipeline["name"]] = f"pipelines[{p}]"


def _check_stage(
    where: str,
    kind: str,
    options: Mapping[str, Any],
    declared: Declarations,
    state: _State,
    source: Mapping[str, Any],
    lookup: Lookup,
    kinds: tuple[str, ...],
) -> None:
    for option, problem in declared.problems(options):
        raise _fail(f"{where}.options.{option}", problem)
    for fact in declared.needs:
        if fact not in state.facts:
            raise _fail(
                where,
                f"{kind} needs {FACTS.get(fact, fact)}, which no earlier stage makes "
                f"(made by {_makers(lookup, kinds, fact)})",
            )
    for option, field_name in declared.source_options.items():
        for path, value in _values(options, option, f"{where}.options"):
            if value != source.get(field_name):
                raise _fail(path, f"{value!r} differs from source.{field_name} {source.get(field_name)!r}")
    for option, namespace in declared.refers.items():
        for path, value in _values(options, option, f"{where}.options"):
            if value not in state.known(namespace):
                raise _fail(path, _unknown(namespace, value, state))
    for option, namespace in declared.defines.items():
        here: set[str] = set()
        for path, value in _values(options, option, f"{where}.options"):
            if value in here:
                raise _fail(path, f"{namespace} {value!r} is named twice")
            here.add(value)
            state.known(namespace)[value] = where
    for fact in declared.makes:
        state.facts[fact] = where


def check(data: Mapping[str, Any]) -> None:
    """Check a schema-valid manifest document against the registry's declarations."""
    from builder.stages import registry

    check_document(data, registry.get, registry.kinds())
