"""The aarch64 example, built on this x86_64 host, boots to the self-test marker under qemu-system-aarch64
(virt machine, AAVMF, TCG); the qcow2 and the raw disk boot at the same time (tests/bootpool.py)."""

from __future__ import annotations

from functools import partial

import pytest

from builder.example import ExampleImage
from tests.bootpool import Booted, Outcomes, boot_all, boot_image
from tests.imagebuilds import ImageBuilds

FORMATS = ("qcow2", "raw")


@pytest.fixture(scope="module")
def booted(example_aarch64: ExampleImage, images: ImageBuilds) -> Outcomes[str, Booted]:
    def job(fmt: str) -> Booted:
        built = images.get(fmt, example_aarch64.reference)
        return boot_image(built.image, "--arch", "aarch64", "--append", "imgbuild.selftest=1")

    return boot_all({fmt: partial(job, fmt) for fmt in FORMATS})


@pytest.mark.parametrize("fmt", FORMATS)
def test_aarch64_boots(
    fmt: str, booted: Outcomes[str, Booted], example_aarch64: ExampleImage, images: ImageBuilds
) -> None:
    built = images.get(fmt, example_aarch64.reference)
    assert built.manifest["source"]["arch"] == "aarch64"
    partitions = built.stage_options("disk.partition")["partitions"]
    assert [p["name"] for p in partitions] == ["esp", "boot", "root"]
    console = booted.outcome(fmt)
    line = console.line()
    assert f"commit={built.result['commit']}" in line, console.console[-3000:]
    assert "console=ttyAMA0" in line
