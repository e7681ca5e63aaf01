"""The whole manifest is checked before anything runs: stage order, the partitions, filesystems and pipelines
stages name, and the source against the import stage. A hand-edited manifest that is wrong gets one line
naming the path, never an assert, KeyError or RuntimeError."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.errors import ManifestError
from builder.manifest import validate
from builder.manifest_check import check_document
from builder.stages import registry

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "plan-qcow2-x86_64.yaml"


def _golden() -> dict[str, Any]:
    doc = yaml.safe_load(GOLDEN.read_text())
    assert isinstance(doc, dict)
    return doc


def _stages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    stages = doc["pipelines"][0]["stages"]
    assert isinstance(stages, list)
    return stages


def _index(doc: dict[str, Any], kind: str) -> int:
    return next(i for i, s in enumerate(_stages(doc)) if s["type"] == kind)


def _swap_deploy_and_partition(doc: dict[str, Any]) -> None:
    stages = _stages(doc)
    a, b = _index(doc, "disk.partition"), _index(doc, "ostree.deploy")
    stages[a], stages[b] = stages[b], stages[a]


def _unknown_partition(doc: dict[str, Any]) -> None:
    _stages(doc)[_index(doc, "fs.mkfs")]["options"]["partition"] = "nosuch"


def _unknown_mount(doc: dict[str, Any]) -> None:
    _stages(doc)[_index(doc, "bootloader.grub")]["options"]["mounts"][1]["partition"] = "bios"


def _missing_import(doc: dict[str, Any]) -> None:
    del _stages(doc)[0]


def _wrong_source(doc: dict[str, Any]) -> None:
    _stages(doc)[0]["options"]["digest"] = "sha256:" + "cd" * 32


def _bootloader_first(doc: dict[str, Any]) -> None:
    stages = _stages(doc)
    stages.insert(1, stages.pop(_index(doc, "bootloader.grub")))


def _duplicate_partition_name(doc: dict[str, Any]) -> None:
    parts = _stages(doc)[_index(doc, "disk.partition")]["options"]["partitions"]
    parts[1]["name"] = parts[0]["name"]


def _duplicate_pipeline(doc: dict[str, Any]) -> None:
    doc["pipelines"].append(copy.deepcopy(doc["pipelines"][0]))


def _partitions_overflow(doc: dict[str, Any]) -> None:
    _stages(doc)[_index(doc, "disk.partition")]["options"]["size"] = 1 << 30


def _no_root_mount(doc: dict[str, Any]) -> None:
    del _stages(doc)[_index(doc, "ostree.deploy")]["options"]["mounts"][0]


def _boot_mounted_twice(doc: dict[str, Any]) -> None:
    mounts = _stages(doc)[_index(doc, "bootloader.grub")]["options"]["mounts"]
    mounts.append(dict(mounts[1]))


BROKEN: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (
        _no_root_mount,
        "pipelines[0].stages[6].options.mounts: "
        "no mount has target '/': the sysroot needs its root filesystem",
    ),
    (_boot_mounted_twice, "pipelines[0].stages[8].options.mounts[2].target: /boot is mounted twice"),
    (
        _partitions_overflow,
        "pipelines[0].stages[1].options.partitions: partition 'boot' does not fit in a disk of 1 GiB",
    ),
    (
        _swap_deploy_and_partition,
        "pipelines[0].stages[1]: ostree.deploy needs a disk, which no earlier stage makes "
        "(made by disk.partition)",
    ),
    (
        _unknown_partition,
        "pipelines[0].stages[2].options.partition: no partition 'nosuch' "
        "(disk.partition at pipelines[0].stages[1] makes bios, esp, boot, var-log, root)",
    ),
    (
        _unknown_mount,
        "pipelines[0].stages[8].options.mounts[1].partition: no filesystem on partition 'bios' "
        "(earlier stages make filesystems on esp, boot, var-log, root)",
    ),
    (
        _missing_import,
        "pipelines[0].stages[5]: ostree.deploy needs the image's commit, which no earlier stage makes "
        "(made by container.import)",
    ),
    (
        _wrong_source,
        "pipelines[0].stages[0].options.digest: "
        "'sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd' "
        "differs from source.digest "
        "'sha256:abababababababababababababababababababababababababababababababab'",
    ),
    (
        _bootloader_first,
        "pipelines[0].stages[1]: bootloader.grub needs a disk, which no earlier stage makes "
        "(made by disk.partition)",
    ),
    (
        _duplicate_partition_name,
        "pipelines[0].stages[1].options.partitions[1].name: partition 'bios' is named twice",
    ),
    (_duplicate_pipeline, "pipelines[1].name: a pipeline named 'qemu' comes earlier"),
]


@pytest.mark.parametrize("golden", sorted(GOLDEN.parent.glob("plan-*.yaml")), ids=lambda p: p.name)
def test_planned_manifests_pass(golden: Path) -> None:
    validate(yaml.safe_load(golden.read_text()))


@pytest.mark.parametrize(("breakage", "message"), BROKEN, ids=[b.__name__ for b, _ in BROKEN])
def test_broken_manifest_is_one_line_naming_the_path(
    breakage: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = _golden()
    breakage(doc)
    with pytest.raises(ManifestError) as info:
        validate(doc)
    assert info.value.message == f"invalid manifest at {message}"
    assert info.value.hint and "\n" not in info.value.message


def test_every_stage_kind_declares_what_it_needs() -> None:
    """Each declared option path exists in the kind's schema, and each needed fact is made by some kind:
    a new kind with a typo in its declarations fails here."""
    made = {fact for name in registry.kinds() for fact in _kind(name).makes}
    for name in registry.kinds():
        kind = _kind(name)
        assert set(kind.needs) <= made, name
        for path in [*kind.refers, *kind.defines, *kind.source_options]:
            schema: Any = kind.schema
            for part in path.replace("[]", ".[]").split("."):
                schema = schema["items"] if part == "[]" else schema["properties"][part]


def _kind(name: str) -> type[registry.StageKind]:
    kind = registry.get(name)
    assert kind is not None
    return kind


@dataclass(frozen=True)
class _Declared:
    needs: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()
    refers: Mapping[str, str] = field(default_factory=dict)
    defines: Mapping[str, str] = field(default_factory=dict)
    source_options: Mapping[str, str] = field(default_factory=dict)

    def problems(self, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        return iter(())


# Kinds declared for this test only: the checker knows no kind by name, only declarations.
TEST_KINDS = {
    "test.disk": _Declared(makes=("disk",), defines={"parts[].name": "partition"}),
    "test.convert": _Declared(needs=("disk",), refers={"from": "pipeline", "extra[].part": "partition"}),
}


def _pipelines(*pipelines: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "version": "imgbuild/1",
        "source": {"reference": "oci:/x", "digest": "sha256:" + "0" * 64, "arch": "x86_64"},
        "pipelines": [{"name": name, "stages": stages} for name, stages in pipelines],
    }


def _check(doc: dict[str, Any]) -> None:
    check_document(doc, TEST_KINDS.get, tuple(TEST_KINDS))


def test_a_stage_may_name_an_earlier_pipeline() -> None:
    disk = {"type": "test.disk", "options": {"parts": [{"name": "a"}, {"name": "b"}]}}
    convert = {"type": "test.convert", "options": {"from": "image", "extra": [{"part": "b"}]}}
    _check(_pipelines(("image", [disk]), ("vmdk", [convert])))
    with pytest.raises(ManifestError) as info:
        _check(_pipelines(("vmdk", [disk, convert]), ("image", [disk])))
    assert (
        info.value.message == "invalid manifest at pipelines[0].stages[1].options.from: no pipeline 'image'"
    )
    with pytest.raises(ManifestError) as info:
        _check(_pipelines(("image", [disk]), ("vmdk", [convert]), ("image", [])))
    assert (
        info.value.message == "invalid manifest at pipelines[2].name: a pipeline named 'image' comes earlier"
    )
    bad = {"type": "test.convert", "options": {"from": "image", "extra": [{"part": "b"}, {"part": "c"}]}}
    with pytest.raises(
        ManifestError, match=r"pipelines\[1\]\.stages\[0\]\.options\.extra\[1\]\.part: no partition 'c'"
    ):
        _check(_pipelines(("image", [disk]), ("vmdk", [bad])))
    with pytest.raises(
        ManifestError, match=r"needs a disk, which no earlier stage makes \(made by test\.disk\)"
    ):
        _check(_pipelines(("vmdk", [convert])))
