"""A failure in each stage in turn (after its work, and in the middle of it while it holds loop devices and
mounts, for every registered stage kind), and SIGTERM mid-build: a clear message, nothing attached, mounted
or half-written."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from builder import run
from builder.example import ExampleImage
from builder.stages import registry
from tests.imagebuilds import ROOT, imgbuild, leaked_resources

DATA = Path(__file__).resolve().parents[1] / "data"
# Kinds that do their work in the target's filesystems: a failure in their middle must find them holding.
WORKS_IN_MOUNTS = {
    "fs.btrfs-subvolumes",
    "ostree.deploy",
    "ostree.customize",
    "ostree.selinux",
    "bootloader.grub",
}


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
    errors = [line for line in err.splitlines() if line.startswith("imgbuild: error:")]
    assert errors == [
        "imgbuild: error: cannot create the output directory /proc/imgbuild-no-such-dir: "
        "No such file or directory"
    ]
    assert leaked_resources(tmp_path) == []


def _with_selinux_stage(doc: dict[str, Any]) -> None:
    """The example carries no SELinux policy; the injected failure comes once the sysroot is mounted, before
    the policy is read, so a hand-added ostree.selinux stage exercises its cleanup all the same."""
    stages = doc["pipelines"][0]["stages"]
    deploy = next(i for i, stage in enumerate(stages) if stage["type"] == "ostree.deploy")
    options = stages[deploy]["options"]
    selinux = {"stateroot": options["stateroot"], "mounts": options["mounts"], "policy": "imgbuildtest"}
    stages.insert(deploy + 1, {"type": "ostree.selinux", "options": selinux})


def _manifests(reference: str, tmp_path: Path) -> list[Path]:
    """Planned manifests that hold every registered stage kind between them."""
    planned = []
    # Every output target in one manifest: cheap ones first, as a failure at stage N runs stages 1..N-1.
    every_target = [a for t in ("raw", "ami", "vhd", "vmdk", "ova", "gce") for a in ("--type", t)]
    for name, types, blueprint in (
        ("btrfs", ["qcow2"], DATA / "btrfs-subvolumes.toml"),
        ("hostname", every_target, DATA / "hostname.toml"),
        ("iso", ["--type", "live-iso", "--type", "iso"], DATA / "hostname.toml"),
    ):
        path = tmp_path / f"{name}.json"
        imgbuild(["plan", *types, reference, "--blueprint", blueprint, "-o", path])
        planned.append(path)
    doc = json.loads(planned[1].read_text())
    _with_selinux_stage(doc)
    planned.append(tmp_path / "selinux.json")
    planned[-1].write_text(json.dumps(doc))
    covered = {kind for path in planned for kind in _stage_types(path)}
    missing = set(registry.kinds()) - covered
    assert not missing, f"add a manifest with {sorted(missing)} to this test"
    return planned


def test_failure_in_the_middle_of_each_stage_kind_cleans_up(
    example_x86_64: ExampleImage, tmp_path: Path
) -> None:
    """IMGBUILD_FAIL_STAGE=N:held: the stage fails at the first command (or the point where its work in the
    mounted sysroot starts) reached while it holds a loop device or a mount. Every stage of the first
    manifest, and each stage of the others whose kind was not met yet."""
    seen: set[str] = set()
    holding: set[str] = set()
    for manifest in _manifests(example_x86_64.reference, tmp_path):
        stages = _stage_types(manifest)
        for index, kind in enumerate(stages, start=1):
            if kind in seen and manifest.stem != "btrfs":
                continue
            seen.add(kind)
            out = tmp_path / f"out-{manifest.stem}-{index}"
            result = imgbuild(
                ["build", manifest, "--output", out, "--progress", "plain"],
                env={"IMGBUILD_FAIL_STAGE": f"{index}:held"},
                check=False,
            )
            err = result.stderr.decode()
            assert result.returncode != 0, kind
            assert f"stage {index}/{len(stages)} {kind}" in err and "Traceback" not in err, err
            assert "failure injected by IMGBUILD_FAIL_STAGE" in err, err
            if "while holding" in err:
                holding.add(kind)
            assert leaked_resources(tmp_path) == [], kind
            assert list(out.iterdir()) == [], f"{kind}: {list(out.iterdir())}"
    assert seen == set(registry.kinds())
    assert holding >= WORKS_IN_MOUNTS | {"fs.mkfs"}, holding
