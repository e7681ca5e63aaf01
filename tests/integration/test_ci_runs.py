"""The GitHub Action and the GitLab template run against the example image the way their runners run them.

The action: every step's `run:` script executed by bash as GitHub's runner does (`bash --noprofile --norc -eo
pipefail FILE`), `${{ ... }}` expressions in `env:` substituted from the inputs, GITHUB_OUTPUT a file per
step, the action's outputs read from the step outputs. The GitLab job: its script run by bash inside the
imgbuild container with the template's variables in the environment.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder import run
from builder.example import ExampleImage
from tests.containerimage import HOST_STORAGE, Podman, into_host_storage, podman
from tests.imagebuilds import ROOT, check_result

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*}}")
BLUEPRINT = 'name = "ci"\n[customizations]\nhostname = "built-by-the-action"\n'


def _outputs_file(path: Path) -> dict[str, str]:
    """GITHUB_OUTPUT's format: `name=value` lines, or `name<<DELIMITER` ... `DELIMITER`."""
    values: dict[str, str] = {}
    lines = iter(path.read_text().splitlines() if path.exists() else [])
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for more in lines:
                if more == delimiter:
                    break
                body.append(more)
            values[name] = "\n".join(body)
        else:
            name, _, value = line.partition("=")
            values[name] = value
    return values


def run_action(inputs: dict[str, str], workdir: Path, env: dict[str, str]) -> dict[str, str]:
    action: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text())
    given = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()} | inputs
    for name, spec in action["inputs"].items():
        assert not spec.get("required") or given[name], f"input {name} is required"
    steps: dict[str, dict[str, str]] = {}

    def expand(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            words = match.group(1).split(".")
            if words[0] == "inputs":
                return given[words[1]]
            if words == ["github", "action_path"]:
                return str(ROOT)
            if words[0] == "steps" and words[2] == "outputs":
                return steps.get(words[1], {}).get(words[3], "")
            raise AssertionError(f"the test runner does not know the expression {match.group(0)}")

        return EXPRESSION.sub(one, text)

    base = {"GITHUB_ACTION_PATH": str(ROOT), "GITHUB_WORKSPACE": str(workdir), "RUNNER_TEMP": str(workdir)}
    for number, step in enumerate(action["runs"]["steps"]):
        assert set(step) <= {"name", "id", "shell", "env", "run"}, step  # no `uses:` or `if:` to emulate
        assert step["shell"] == "bash"
        script = workdir / f"step-{number}.sh"
        script.write_text(step["run"])
        output_file = workdir / f"github-output-{number}"
        step_env = {**base, **env, "GITHUB_OUTPUT": str(output_file)}
        step_env |= {name: expand(str(value)) for name, value in step.get("env", {}).items()}
        done = run.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", script],
            env=step_env,
            cwd=workdir,
            check=False,
            timeout=1800,
        )
        assert done.returncode == 0, f"step {step['name']}:\n" + done.stderr.decode()[-3000:]
        if "id" in step:
            steps[step["id"]] = _outputs_file(output_file)
    return {name: expand(spec["value"]) for name, spec in action["outputs"].items()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_github_action_builds_the_example(
    tmp_path: Path, example_x86_64: ExampleImage, imgbuild_container: str
) -> None:
    ref = into_host_storage(example_x86_64, "localhost/imgbuild-test-example:latest")
    pod = podman(tmp_path)
    storage_conf = tmp_path / "storage.conf"  # the runner's /etc/containers/storage.conf, here a test file
    env = {**pod.env, "IMGBUILD_PODMAN": pod.command, "IMGBUILD_STORAGE_CONF": str(storage_conf)}
    inputs = {
        "image": ref,
        "types": "qcow2",
        "blueprint": BLUEPRINT,  # inline text
        "output-directory": "out",
        "builder-image": imgbuild_container,
        "free-disk-space": "true",
    }
    outputs = run_action(inputs, tmp_path, env)

    assert 'driver = "overlay"' in storage_conf.read_text()
    out = tmp_path / "out"
    assert outputs["output-directory"] == str(out)
    qcow2 = Path(outputs["qcow2-output-path"])
    assert qcow2.is_file() and qcow2.is_relative_to(out)
    assert outputs["qcow2-output-checksum"] == _sha256(qcow2)
    assert json.loads(outputs["output-paths"]) == [{"type": "qcow2", "path": str(qcow2)}]
    assert outputs["raw-output-path"] == outputs["ami-id"] == ""
    result = check_result(Path(outputs["result-path"]))
    assert outputs["source-digest"] == result["source"]["digest"]
    manifest = Path(outputs["manifest-path"]).read_text()
    assert "built-by-the-action" in manifest  # the inline blueprint was applied
    info = json.loads(run.run(["qemu-img", "info", "--output=json", qcow2]).out)
    assert info["format"] == "qcow2"


def test_action_refuses_a_missing_blueprint_file(tmp_path: Path, imgbuild_container: str) -> None:
    pod = podman(tmp_path)
    env = {**pod.env, "IMGBUILD_PODMAN": pod.command, "IMGBUILD_STORAGE_CONF": str(tmp_path / "s.conf")}
    inputs = {"image": "oci:/nowhere", "blueprint": "no-such.toml", "builder-image": imgbuild_container}
    with pytest.raises(AssertionError, match=r"the blueprint file no-such\.toml does not exist"):
        run_action(inputs, tmp_path, env)


def _gitlab_job(pod: Podman, variables: dict[str, str], workdir: Path, image: str) -> run.Completed:
    template = yaml.safe_load((ROOT / "ci" / "gitlab" / "imgbuild.yml").read_text())
    job = template[".imgbuild"]
    env = {**template["variables"], **variables}
    script = "\n".join(job["script"])
    argv: list[str | Path] = ["run", "--rm", "--privileged", "-v", f"{workdir}:/builds", "-w", "/builds"]
    argv += ["-v", f"{HOST_STORAGE}:{HOST_STORAGE}"]
    for name, value in env.items():
        argv += ["-e", f"{name}={value}"]
    return pod.run(*argv, "--entrypoint", "bash", image, "-c", script)


def test_gitlab_template_builds_the_example(
    tmp_path: Path, example_x86_64: ExampleImage, imgbuild_container: str
) -> None:
    ref = into_host_storage(example_x86_64, "localhost/imgbuild-test-example:latest")
    variables = {"IMGBUILD_IMAGE": ref, "IMGBUILD_TYPES": "qcow2", "IMGBUILD_BLUEPRINT": BLUEPRINT}
    done = _gitlab_job(podman(tmp_path), variables, tmp_path, imgbuild_container)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = dict(
        line.split("=", 1) for line in (tmp_path / "imgbuild.env").read_text().splitlines() if "=" in line
    )
    qcow2 = tmp_path / Path(report["IMGBUILD_QCOW2_OUTPUT_PATH"])
    assert report["IMGBUILD_QCOW2_OUTPUT_CHECKSUM"] == _sha256(qcow2)
    assert json.loads(report["IMGBUILD_OUTPUT_PATHS"])[0]["type"] == "qcow2"
    check_result(tmp_path / report["IMGBUILD_RESULT_PATH"])
    assert "built-by-the-action" in (tmp_path / report["IMGBUILD_MANIFEST_PATH"]).read_text()
