"""Manifest validation: every stage kind has a valid closed schema, and errors name their path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from builder.errors import ManifestError
from builder.manifest import loads
from builder.stages import registry

DIGEST = "sha256:" + "0" * 64
UUID = "3f0e2b1c-0000-4000-8000-000000000001"


def _doc(stages: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "version": "imgbuild/1",
            "source": {"reference": "oci:/tmp/x", "digest": DIGEST, "arch": "x86_64"},
            "pipelines": [{"name": "image", "stages": stages}],
        }
    )


PARTITION = {
    "type": "disk.partition",
    "options": {
        "filename": "disk.raw",
        "size": 1 << 30,
        "uuid": UUID,
        "partitions": [
            {"name": "root", "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "size": None, "uuid": UUID}
        ],
    },
}


def test_every_stage_kind_has_a_closed_schema() -> None:
    kinds = registry.kinds()
    assert {
        "container.import",
        "disk.partition",
        "fs.mkfs",
        "ostree.deploy",
        "bootloader.grub",
        "target.qcow2",
    } <= set(kinds)
    for name in kinds:
        kind = registry.get(name)
        assert kind is not None and kind.schema["additionalProperties"] is False


def test_valid_manifest_loads() -> None:
    manifest = loads(
        _doc([PARTITION, {"type": "target.raw", "options": {"filename": "disk.raw", "platform": "qemu"}}])
    )
    assert [s.type for _, s in manifest.stages()] == ["disk.partition", "target.raw"]
    assert len(set(manifest.stage_ids())) == 2


def test_wrong_option_names_its_path() -> None:
    bad = json.loads(json.dumps(PARTITION))
    bad["options"]["size"] = "big"
    with pytest.raises(ManifestError, match=r"pipelines\[0\]\.stages\[1\]\.options\.size"):
        loads(_doc([{"type": "target.raw", "options": {"filename": "a.raw", "platform": "qemu"}}, bad]))


def test_unknown_option_and_unknown_stage() -> None:
    bad = json.loads(json.dumps(PARTITION))
    bad["options"]["colour"] = "blue"
    with pytest.raises(ManifestError, match=r"pipelines\[0\]\.stages\[0\]\.options: .*colour"):
        loads(_doc([bad]))
    with pytest.raises(ManifestError, match=r"pipelines\[0\]\.stages\[0\]\.type: unknown stage type"):
        loads(_doc([{"type": "disk.explode", "options": {}}]))


def test_nested_path_and_top_level_errors() -> None:
    bad = json.loads(json.dumps(PARTITION))
    bad["options"]["partitions"][0]["uuid"] = "nope"
    with pytest.raises(ManifestError, match=r"stages\[0\]\.options\.partitions\[0\]\.uuid"):
        loads(_doc([bad]))
    with pytest.raises(ManifestError, match=r"source\.arch"):
        loads(_doc([PARTITION]).replace('"x86_64"', '"sparc"'))
    with pytest.raises(ManifestError, match="not valid JSON or YAML"):
        loads("{nope")
