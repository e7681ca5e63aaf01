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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_build_cleans_up(signum: int, example_x86_64: ExampleImage, tmp_path: Path) -> None:
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
    with run.spawn(argv, env=env, stdout=run.DEVNULL, check=False) as proc:
        # Signal once the build holds loop devices and mounts (the deployment runs in mounted filesystems).
        deadline = time.monotonic() + 600
        while not any(leak.startswith("mount ") for leak in leaked_resources(out)):
            assert proc.poll() is None, "the build ended before it mounted anything"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signum)
        rc = proc.wait(120)
    assert rc == 130
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
