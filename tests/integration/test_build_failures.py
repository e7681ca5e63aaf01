"""A failure in each stage in turn, and SIGTERM mid-build: a clear message, nothing attached, mounted or
half-written."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from builder import run
from builder.example import ExampleImage
from tests.imagebuilds import ROOT, imgbuild, leaked_resources


def _stage_types(manifest: Path) -> list[str]:
    doc = json.loads(manifest.read_text())
    return [stage["type"] for pipeline in doc["pipelines"] for stage in pipeline["stages"]]


def test_failure_in_each_stage_cleans_up(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    manifest = tmp_path / "plan.json"
    imgbuild(["plan", "qcow2", example_x86_64.reference, "-o", manifest])
    stages = _stage_types(manifest)
    assert len(stages) >= 7
    for index, kind in enumerate(stages, start=1):
        out = tmp_path / f"out-{index}"
        result = imgbuild(
            ["build", manifest, "--output", out, "--progress", "plain"],
            env={"IMGBUILD_FAIL_STAGE": str(index)},
            check=False,
        )
        err = result.stderr.decode()
        assert result.returncode != 0, kind
        assert f"stage {index}/{len(stages)} {kind}" in err and "Traceback" not in err, err
        assert leaked_resources(tmp_path) == [], kind
        assert list(out.iterdir()) == [], f"{kind}: {list(out.iterdir())}"


def test_sigterm_mid_build_cleans_up(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    manifest = tmp_path / "plan.json"
    imgbuild(["plan", "qcow2", example_x86_64.reference, "-o", manifest])
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "builder",
        "build",
        str(manifest),
        "--output",
        str(out),
        "--progress",
        "json",
    ]
    env = {"PYTHONPATH": str(ROOT)}
    if "IMGBUILD_CACHE" in os.environ:
        env["IMGBUILD_CACHE"] = os.environ["IMGBUILD_CACHE"]
    with run.spawn(argv, env=env, check=False) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "stage-start" and event["stage"] == "ostree.deploy":
                time.sleep(2)  # inside the deployment, with loop devices and mounts held
                proc.send_signal(signal.SIGTERM)
                break
        else:
            pytest.fail("the build ended before ostree.deploy")
        rc = proc.wait(120)
    assert rc != 0
    assert leaked_resources(tmp_path) == []
    assert list(out.iterdir()) == []


def test_unwritable_output_is_one_line(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    result = imgbuild(
        ["raw", example_x86_64.reference, "--output", "/proc/imgbuild-no-such-dir"], check=False
    )
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err
    assert err.splitlines()[0] == (
        "imgbuild: error: cannot create the output directory /proc/imgbuild-no-such-dir: "
        "No such file or directory"
    )
    assert leaked_resources(tmp_path) == []
