"""The cloud and VMware outputs boot to the self-test marker: vmdk, vhd, the disk.raw inside the gce archive
and the ami disk on x86_64 (all from one multi-output build), each once, two under SeaBIOS and two under
OVMF (every x86_64 disk carries both BIOS and UEFI boot, written by the same bootloader stage, and the qcow2
and raw disks boot under both firmwares in tests/vm/test_boot_x86_64.py), and an aarch64 vmdk and ami under
AAVMF (from one build). The six boots run two at a time (tests/bootpool.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from builder import run
from builder.example import SELFTEST_KARG, ExampleImage
from tests.bootpool import Booted, Outcomes, boot_all, boot_image
from tests.imagebuilds import Built, ImageBuilds

# The same set as tests/integration/test_targets.py: one build serves both when they run in one session.
ALL = ("qcow2", "raw", "vmdk", "vhd", "gce", "ova", "ami")
AARCH64 = ("vmdk", "ami")
# Each x86_64 output once, with the firmware its platform boots by default (VMware BIOS, Azure Gen2 and GCE
# UEFI); the ami in BIOS mode, as EC2's older instance types boot it (aarch64's ami boots UEFI below).
X86_64 = [("vmdk", "bios"), ("vhd", "uefi"), ("gce", "uefi"), ("ami", "bios")]


def _boot_target(built: Built, target: str, tmp: Path, *args: str) -> Booted:
    path = built.target_file(target)
    if target != "gce":
        return boot_image(path, "--append", SELFTEST_KARG, *args)
    # GCE boots the disk.raw inside: unpack it as GCE's import does (sparse), and drop it after the boot.
    tmp.mkdir()
    try:
        run.run(["tar", "-xSf", path, "-C", tmp])
        return boot_image(tmp / "disk.raw", "--append", SELFTEST_KARG, *args)
    finally:
        shutil.rmtree(tmp)


@pytest.fixture(scope="module")
def booted(
    example_x86_64: ExampleImage,
    example_aarch64: ExampleImage,
    images: ImageBuilds,
    tmp_path_factory: pytest.TempPathFactory,
) -> Outcomes[tuple[str, ...], Booted]:
    tmp = tmp_path_factory.mktemp("boot-targets")

    def x86_64(target: str, firmware: str) -> Booted:
        built = images.multi(ALL, example_x86_64.reference)
        return _boot_target(built, target, tmp / f"{target}-{firmware}", "--firmware", firmware)

    def aarch64(target: str) -> Booted:
        built = images.multi(AARCH64, example_aarch64.reference)
        return _boot_target(
            built, target, tmp / f"aarch64-{target}", "--arch", "aarch64", "--firmware", "uefi"
        )

    # The aarch64 boots are the longest: they start first, the x86_64 ones fill the other slot meanwhile.
    jobs: dict[tuple[str, ...], Callable[[], Booted]] = {("aarch64", t): partial(aarch64, t) for t in AARCH64}
    jobs |= {("x86_64", t, f): partial(x86_64, t, f) for t, f in X86_64}
    return boot_all(jobs)


@pytest.mark.parametrize(("target", "firmware"), X86_64)
def test_x86_64_target_boots(
    target: str,
    firmware: str,
    booted: Outcomes[tuple[str, ...], Booted],
    example_x86_64: ExampleImage,
    images: ImageBuilds,
) -> None:
    built = images.multi(ALL, example_x86_64.reference)
    line = booted.outcome(("x86_64", target, firmware)).line()
    assert f"commit={built.result['commit']}" in line
    assert "console=ttyS0,115200n8" in line


@pytest.mark.parametrize("target", AARCH64)
def test_aarch64_target_boots(
    target: str,
    booted: Outcomes[tuple[str, ...], Booted],
    example_aarch64: ExampleImage,
    images: ImageBuilds,
) -> None:
    built = images.multi(AARCH64, example_aarch64.reference)
    # On aarch64 EC2's serial port differs from VMware's: two deployments, two pipelines, one build.
    assert [p["name"] for p in built.manifest["pipelines"]] == ["vmware", "aws"]
    entry = next(e for e in built.result["outputs"] if e["target"] == target)
    assert entry["arch"] == "aarch64"
    if target == "ami":
        assert entry["boot_modes"] == ["uefi"]
    line = booted.outcome(("aarch64", target)).line()
    assert f"commit={built.result['commit']}" in line
    assert "console=ttyAMA0,115200n8" in line
