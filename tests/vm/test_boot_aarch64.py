"""The aarch64 example, built on this x86_64 host, boots to the self-test marker under qemu-system-aarch64
(virt machine, AAVMF, TCG)."""

from __future__ import annotations

import pytest

from builder.example import SELFTEST_MARKER, ExampleImage
from tests.imagebuilds import ImageBuilds, imgbuild


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_aarch64_boots(fmt: str, example_aarch64: ExampleImage, images: ImageBuilds) -> None:
    built = images.get(fmt, example_aarch64.reference)
    assert built.manifest["source"]["arch"] == "aarch64"
    partitions = built.stage_options("disk.partition")["partitions"]
    assert [p["name"] for p in partitions] == ["esp", "boot", "root"]
    out = imgbuild(
        ["boot", built.image, "--arch", "aarch64", "--append", "imgbuild.selftest=1", "--timeout", "900"]
    ).out
    line = next((x for x in out.splitlines() if SELFTEST_MARKER in x), "")
    assert f"commit={built.result['commit']}" in line, out[-3000:]
    assert "console=ttyAMA0" in line
