"""action.yml and the GitLab template: valid against the published schemas, outputs like
bootc-image-builder-action's, no input pasted into a script, the outputs script reads result.json right."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder import run
from tests.imagebuilds import ROOT

CHECK = Path(sys.executable).with_name("check-jsonschema")
OUTPUTS = ROOT / "ci" / "action" / "outputs.py"
# osbuild/bootc-image-builder-action's outputs: whoever moves from it finds the same names here.
BIB_OUTPUTS = {"output-directory", "output-paths", "manifest-path"} | {
    f"{t}-output-{what}"
    for t in ("qcow2", "vmdk", "anaconda-iso", "raw", "vhd")
    for what in ("path", "checksum")
}


def _action() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text())
    return doc


@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-actions", "action.yml"), ("vendor.gitlab-ci", "ci/gitlab/imgbuild.yml")],
)
def test_valid_against_published_schema(schema: str, path: str) -> None:
    done = run.run([CHECK, "--builtin-schema", schema, ROOT / path], check=False)
    assert done.returncode == 0, done.out + done.stderr.decode()


def test_schema_check_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "action.yml"
    # No description, and a composite step without shell:
    broken.write_text("name: x\nruns:\n  using: composite\n  steps: [{run: echo}]\n")
    assert run.run([CHECK, "--builtin-schema", "vendor.github-actions", broken], check=False).returncode == 1


def test_outputs_cover_bootc_image_builder_action() -> None:
    outputs = set(_action()["outputs"])
    assert outputs >= BIB_OUTPUTS
    assert outputs >= {"result-path", "ami-id", "iso-output-path", "ami-output-checksum"}
    # Every per-type output the action declares is one the outputs script writes, and the other way round.
    namespace: dict[str, Any] = {}
    exec(compile(OUTPUTS.read_text(), str(OUTPUTS), "exec"), namespace)
    per_type = {f"{t}-output-{w}" for t in namespace["KNOWN_TYPES"] for w in ("path", "checksum")}
    assert {o for o in outputs if re.search(r"-output-(path|checksum)$", o)} == per_type


def test_inputs_reach_scripts_only_through_the_environment() -> None:
    action = _action()
    assert set(action["inputs"]) >= {
        "image", "types", "blueprint", "arch", "rootfs", "output-directory",
        "aws-ami-name", "aws-region", "aws-bucket", "free-disk-space",
    }  # fmt: skip
    for step in action["runs"]["steps"]:
        assert "${{" not in step["run"], step["name"]
        for value in step.get("env", {}).values():
            names = re.findall(r"\$\{\{\s*inputs\.([\w-]+)\s*}}", value)
            assert all(n in action["inputs"] for n in names), value


def test_scripts_parse() -> None:
    gitlab = yaml.safe_load((ROOT / "ci/gitlab/imgbuild.yml").read_text())
    scripts = [*gitlab[".imgbuild"]["script"]]
    scripts += [p.read_text() for p in (ROOT / "ci" / "action").glob("*.sh")]
    scripts.append((ROOT / "ci" / "container" / "entrypoint").read_text())
    for script in scripts:
        done = run.run(["bash", "-n"], input=script.encode(), check=False)
        assert done.returncode == 0, done.stderr.decode()


def _result(out: Path, outputs: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for o in outputs:
        (out / o["path"]).write_bytes(b"x")
    result = {
        "imgbuild": "0.1.0",
        "source": {"reference": "oci:/x", "digest": "sha256:" + "1" * 64, "arch": "x86_64"},
        "commit": "2" * 64,
        "manifest": "manifest.json",
        "outputs": outputs,
        "seconds": 1.0,
    }
    (out / "result.json").write_text(json.dumps(result))


def _outputs(*args: str | Path) -> dict[str, str]:
    done = run.run([sys.executable, OUTPUTS, *args], check=False)
    assert done.returncode == 0, done.stderr.decode()
    return dict(line.split("=", 1) for line in done.out.splitlines())


def _out(t: str, path: str, sha: str) -> dict[str, Any]:
    return {"path": path, "format": t, "size": 1, "sha256": sha}


def test_outputs_of_one_build_with_several_types(tmp_path: Path) -> None:
    _result(tmp_path, [_out("qcow2", "disk.qcow2", "a" * 64), _out("raw", "disk.raw", "b" * 64)])
    got = _outputs(tmp_path, "qcow2", "raw")
    assert json.loads(got["output-paths"]) == [
        {"type": "qcow2", "path": str(tmp_path / "disk.qcow2")},
        {"type": "raw", "path": str(tmp_path / "disk.raw")},
    ]
    assert got["qcow2-output-checksum"] == "a" * 64 and got["raw-output-path"] == str(tmp_path / "disk.raw")
    assert got["vmdk-output-path"] == "" and got["ami-id"] == ""
    assert got["manifest-path"] == str(tmp_path / "manifest.json")
    assert got["result-path"] == str(tmp_path / "result.json")


def test_outputs_of_one_build_per_type(tmp_path: Path) -> None:
    _result(tmp_path / "qcow2", [_out("qcow2", "disk.qcow2", "a" * 64)])
    _result(tmp_path / "ami", [_out("raw", "disk.raw", "c" * 64)])
    (tmp_path / "ami.jsonl").write_text(
        '{"event": "build-end", "result": {"image_id": "ami-0123456789abcdef0"}}\n'
    )
    got = _outputs(tmp_path, "qcow2", "ami")
    assert got["ami-output-path"] == str(tmp_path / "ami" / "disk.raw")
    assert got["ami-id"] == "ami-0123456789abcdef0"
    found = run.run([sys.executable, OUTPUTS, "--find", "ami", tmp_path]).out.strip()
    assert found == "ami/disk.raw"


def test_outputs_refuse_a_missing_type(tmp_path: Path) -> None:
    _result(tmp_path, [_out("qcow2", "disk.qcow2", "a" * 64)])
    done = run.run([sys.executable, OUTPUTS, tmp_path, "qcow2", "iso"], check=False)
    assert done.returncode == 1 and b"no output of type iso" in done.stderr
