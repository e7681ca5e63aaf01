"""The manifest: what a build will do, as data.

A manifest is an ordered list of typed stages in the osbuild style:

    {"version": "imgbuild/1",
     "source": {"reference": ..., "digest": ..., "arch": ...},
     "pipelines": [{"name": "image", "stages": [{"type": "disk.partition", "options": {...}}, ...]}]}

`imgbuild plan` writes it (YAML or JSON), `imgbuild build` validates all of it before anything runs: the
document against `manifest.schema.json`, then each stage's options against its kind's JSON Schema, then the
whole manifest against what each stage kind declares it needs (builder/manifest_check.py). Errors name
the path (`pipelines[0].stages[3].options.size`), as osbuild does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from builder.errors import ManifestError
from builder.manifest_check import check as check_declarations
from builder.stages import registry

VERSION = "imgbuild/1"
_SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Stage:
    type: str
    options: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "options": dict(self.options)}


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class Source:
    reference: str  # as skopeo takes it
    digest: str  # manifest digest of the image
    arch: str


@dataclass(frozen=True)
class Manifest:
    source: Source
    pipelines: tuple[Pipeline, ...]

    def stages(self) -> Iterator[tuple[str, Stage]]:
        """Every stage in execution order with its path, e.g. ("pipelines[0].stages[3]", stage)."""
        for p, pipeline in enumerate(self.pipelines):
            for s, stage in enumerate(pipeline.stages):
                yield f"pipelines[{p}].stages[{s}]", stage

    def stage_ids(self) -> list[str]:
        """Each stage's id: the hash of its type and options chained with the previous stage's id in its
        pipeline.

        An unchanged prefix of stages keeps its ids, so the ids are cache keys (as in osbuild); each pipeline
        starts its own chain, so the import that begins every pipeline has one id (one cache record).
        """
        ids: list[str] = []
        for pipeline in self.pipelines:
            previous = ""
            for stage in pipeline.stages:
                digest = hashlib.sha256(canonical_json([previous, stage.type, stage.options])).hexdigest()
                ids.append(digest)
                previous = digest
        return ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "source": {
                "reference": self.source.reference,
                "digest": self.source.digest,
                "arch": self.source.arch,
            },
            "pipelines": [
                {"name": p.name, "stages": [s.to_dict() for s in p.stages]} for p in self.pipelines
            ],
        }

    def dumps(self, fmt: str = "yaml") -> str:
        data = self.to_dict()
        if fmt == "json":
            return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        return yaml.dump(
            data, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, allow_unicode=True
        )


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated values out in full: anchors and aliases make a manifest hard to read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _schema_error(error: jsonschema.ValidationError, prefix: Sequence[str | int]) -> ManifestError:
    where = _path([*prefix, *error.absolute_path]) or "manifest"
    return ManifestError(
        f"invalid manifest at {where}: {error.message}",
        hint="fix the manifest or regenerate it with `imgbuild plan`",
    )


def validate(data: Any) -> Manifest:
    """Validate a parsed manifest document completely and return the model."""
    schema = json.loads(_SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: e.path)
    if errors:
        raise _schema_error(errors[0], [])
    pipelines = []
    for p, raw_pipeline in enumerate(data["pipelines"]):
        stages = []
        for s, raw_stage in enumerate(raw_pipeline["stages"]):
            kind = registry.get(raw_stage["type"])
            if kind is None:
                raise ManifestError(
                    f"invalid manifest at pipelines[{p}].stages[{s}].type: "
                    f"unknown stage type {raw_stage['type']!r}",
                    hint=f"known stage types: {', '.join(sorted(registry.kinds()))}",
                )
            options = raw_stage.get("options", {})
            stage_errors = sorted(kind.validator().iter_errors(options), key=lambda e: e.path)
            if stage_errors:
                raise _schema_error(stage_errors[0], ["pipelines", p, "stages", s, "options"])
            stages.append(Stage(raw_stage["type"], options))
        pipelines.append(Pipeline(raw_pipeline["name"], tuple(stages)))
    # Then the manifest as a whole: order, names, source (builder/manifest_check.py).
    check_declarations(data)
    src = data["source"]
    return Manifest(Source(src["reference"], src["digest"], src["arch"]), tuple(pipelines))


def loads(text: str, origin: str = "<manifest>") -> Manifest:
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0]
        raise ManifestError(f"{origin} is not valid JSON or YAML: {first}") from e
    return validate(data)


def load(path: Path) -> Manifest:
    try:
        text = path.read_text()
    except OSError as e:
        raise ManifestError(f"cannot read manifest {path}: {e.strerror}") from e
    return loads(text, str(path))
