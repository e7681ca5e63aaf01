"""The cloud and VMware outputs boot to the self-test marker: vmdk, vhd, the disk.raw inside the gce archive
and the ami disk, under SeaBIOS and OVMF on x86_64 (all from one multi-output build), and an aarch64 vmdk and
ami under AAVMF (from one build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import run
from builder.example import SELFTEST_KARG, SELFTEST_MARKER, ExampleImage
from tests.imagebuilds import Built, ImageBuilds, imgbuild

# The same set as tests/integration/test_targets.py: one build serves both when they run in one session.
ALL = ("qcow2", "raw", "vmdk", "vhd", "gce", "ova", "ami")


def _bootable(built: Built, target: str, tmp: Path) -> Path:
    path = built.target_file(target)
    if target == "gce":  # GCE boots the disk.raw inside: unpack it as GCE's import does (sparse)
        run.run(["tar", "-xSf", path, "-C", tmp])
        return tmp / "disk.raw"
    return path


def _boot(image: Path, *args: str) -> str:
    out = imgbuild(["boot", image, "--append", SELFTEST_KARG, "--timeout", "900", *args]).out
    return next((line for line in out.splitlines() if SELFTEST_MARKER in line), "")


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
@pytest.mark.parametrize("target", ["vmdk", "vhd", "gce", "ami"])
def test_x86_64_target_boots(
    target: str, firmware: str, example_x86_64: ExampleImage, images: ImageBuilds, tmp_path: Path
) -> None:
    built = images.multi(ALL, example_x86_64.reference)
    line = _boot(_bootable(built, target, tmp_path), "--firmware", firmware)
    assert f"commit={built.result['commit']}" in line
    assert "console=ttyS0,115200n8" in line


@pytest.mark.parametrize("target", ["vmdk", "ami"])
def test_aarch64_target_boots(target: str, example_aarch64: ExampleImage, images: ImageBuilds) -> None:
    built = images.multi(("vmdk", "ami"), example_aarch64.reference)
    # On aarch64 EC2's serial port differs from VMware's: two deployments, two pipelines, one build.
    assert [p["name"] for p in built.manifest["pipelines"]] == ["vmware", "aws"]
    entry = next(e for e in built.result["outputs"] if e["target"] == target)
    assert entry["arch"] == "aarch64"
    if target == "ami":
        assert entry["boot_modes"] == ["uefi"]
    line = _boot(built.target_file(target), "--arch", "aarch64", "--firmware", "uefi")
    assert f"commit={built.result['commit']}" in line
    assert "console=ttyAMA0,115200n8" in line
