"""The registry of stage kinds.

A stage kind subclasses StageKind with `kind="..."`; that registers it once, loads its JSON Schema from
`schemas/<kind>.json` beside this module (or from `schema=`, e.g. a target's JSON file beside its module under
targets/) and checks that the schema is itself valid and closed
(`additionalProperties: false`).

A kind also declares what it needs from earlier stages and what it makes (facts, partition and filesystem
names, pipelines it reads, options that repeat the manifest's source): builder/manifest_check.py checks a
whole manifest against these declarations before anything runs, so a new kind only declares its own.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import jsonschema

if TYPE_CHECKING:
    from builder.stages.context import BuildContext

SCHEMA_DIR = Path(__file__).with_name("schemas")
_REGISTRY: dict[str, type[StageKind]] = {}
# The modules that define stage kinds; imported on first look-up.
STAGE_MODULES = (
    "builder.stages.container",
    "builder.stages.disk",
    "builder.stages.deploy",
    "builder.stages.bootloader",
    "targets",  # output targets are stage kinds target.<name>, one module each (targets/__init__.py)
)


class StageKind:
    """One kind of stage. Subclasses implement `run`; options arrive validated against `schema`."""

    kind: ClassVar[str]
    schema: ClassVar[dict[str, Any]]
    # Whether the runner may skip the stage when a record of the same stage id exists in the cache.
    cacheable: ClassVar[bool] = False
    # What builder/manifest_check.py checks (see there): facts needed from earlier stages and made for later
    # ones ("commit", "disk", "deployment"); option paths naming a partition, filesystem or pipeline made
    # earlier, or defining names; options that must equal the manifest's source fields.
    needs: ClassVar[tuple[str, ...]] = ()
    makes: ClassVar[tuple[str, ...]] = ()
    refers: ClassVar[Mapping[str, str]] = {}
    defines: ClassVar[Mapping[str, str]] = {}
    source_options: ClassVar[Mapping[str, str]] = {}
    # Facts `preflight` needs: the runner calls it as soon as earlier stages have made them, before the
    # stages in between run (the blueprint is checked against the imported commit before any disk exists).
    preflight_needs: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, /, kind: str | None = None, schema: Path | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is None:  # an abstract base of several kinds (targets.base.Target): not registered
            return
        if kind in _REGISTRY:
            raise TypeError(f"stage kind {kind} registered twice")
        cls.kind = kind
        cls.schema = json.loads((schema or SCHEMA_DIR / f"{kind}.json").read_text())
        jsonschema.Draft202012Validator.check_schema(cls.schema)
        if cls.schema.get("additionalProperties") is not False:
            raise TypeError(f"schema of stage kind {kind} must set additionalProperties: false")
        _REGISTRY[kind] = cls

    @classmethod
    def problems(cls, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """What is wrong with schema-valid options on their own (a layout that does not fit), as (option
        path, message) pairs; checked with the rest of the manifest before anything runs."""
        return iter(())

    @classmethod
    def preflight(cls, options: Mapping[str, Any], ctx: BuildContext) -> None:
        """Refuse, early, what `run` would refuse later (see preflight_needs)."""

    @classmethod
    def validator(cls) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(cls.schema)

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> Mapping[str, Any] | None:
        """Do the stage's work. A cacheable stage returns the record the runner stores under its id."""
        raise NotImplementedError

    def restore(self, record: Mapping[str, Any], options: Mapping[str, Any], ctx: BuildContext) -> bool:
        """Take a cached record instead of running; False when the cached result is gone (run instead)."""
        return False


@cache
def _load_all() -> None:
    for module in STAGE_MODULES:
        importlib.import_module(module)


def get(kind: str) -> type[StageKind] | None:
    _load_all()
    return _REGISTRY.get(kind)


def kinds() -> tuple[str, ...]:
    _load_all()
    return tuple(_REGISTRY)
