"""The targets registry: one module per output, each a stage kind with a valid closed schema, and the CLI
and compose service offer exactly the registered targets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema
import pytest

import targets
from builder.cli import build_parser, main
from builder.service.weldr import COMPOSE_TYPES, IMAGE_MIME_TYPES
from builder.stages import registry
from targets.base import Target, TargetPlan
from targets.platforms import Platform

EXPECTED = ("qcow2", "raw", "vmdk", "vhd", "gce", "ova", "ami", "live-iso", "iso")
TARGETS_DIR = Path(targets.__file__).parent


def test_every_target_is_registered_once_in_its_own_module() -> None:
    found = targets.all_targets()
    assert tuple(found) == EXPECTED
    for name, target in found.items():
        assert issubclass(target, Target) and target.name == name
        module = name.replace("-", "_")  # live-iso: targets/live_iso.py
        assert target.__module__ == f"targets.{module}", "one module per target"
        assert registry.get(f"target.{name}") is target, "a target is the stage kind target.<name>"
        assert (TARGETS_DIR / f"{module}.json").is_file(), "its schema beside its module"
        assert target.help and target.mime and target.format
    filenames = [t.filename for t in found.values()]
    assert len(set(filenames)) == len(filenames), "one build can write every target: names must differ"


@pytest.mark.parametrize("name", EXPECTED)
def test_schema_is_valid_closed_and_takes_the_planned_options(name: str) -> None:
    target = targets.get(name)
    jsonschema.Draft202012Validator.check_schema(target.schema)
    assert target.schema["additionalProperties"] is False
    assert set(target.schema["required"]) >= {"filename", "platform"}
    assert target.schema["properties"]["platform"]["enum"] == [p.value for p in Platform]
    for platform in Platform:
        # A root mount for the targets that read the deployment (the ISOs' UEFI loader).
        root = {"partition": "root", "target": "/", "fstype": "ext4"}
        plan = TargetPlan(platform, True, ("bios", "uefi"), "golden", mounts=(root,))
        options = target.stage_options(plan)
        target.validator().validate(options)
        with pytest.raises(jsonschema.ValidationError):
            target.validator().validate({**options, "colour": "blue"})


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_cli_has_one_command_per_target_and_the_types_match() -> None:
    commands = _commands()
    assert set(EXPECTED) <= set(commands)
    non_target = {"plan", "build", "inspect", "import", "example", "encapsulate", "serve", "boot"}
    extra = set(commands) - set(EXPECTED) - non_target
    assert not any(name in targets.names() for name in extra)
    assert COMPOSE_TYPES == EXPECTED
    assert set(IMAGE_MIME_TYPES) == set(EXPECTED)


def test_unknown_type_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--type", "qcow2", "--type", "floppy", "oci:/nowhere"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "imgbuild: error: unknown output type 'floppy'"
    assert err[1].startswith("hint: use one of: qcow2, raw, vmdk")


def test_build_manifest_refuses_plan_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({}))
    assert main(["build", str(manifest), "--rootfs", "xfs", "--platform", "aws"]) == 2
    err = capsys.readouterr().err
    assert "--rootfs, --platform plan an image: they need --type" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--type", "qcow2", "a", "b"], "with --type, `imgbuild plan` takes one container reference"),
        (["plan", "REF"], "`imgbuild plan` takes an output type and a container reference"),
        (["plan", "floppy", "REF"], "unknown output type 'floppy'"),
        (["build", "--type", "qcow2", "REF", "--platform", "mars"], "unknown platform 'mars'"),
    ],
)
def test_plan_argument_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
