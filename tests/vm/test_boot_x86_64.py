"""x86_64 images built from the example OS boot to the self-test marker under SeaBIOS and OVMF (TCG)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from builder.example import SELFTEST_MARKER, ExampleImage
from tests.imagebuilds import ImageBuilds, imgbuild

DATA = Path(__file__).resolve().parents[1] / "data"


def _boot(image: str, firmware: str, *extra: str) -> str:
    result = imgbuild(["boot", image, "--firmware", firmware, "--timeout", "600", *extra])
    out = result.out
    line = next((x for x in out.splitlines() if SELFTEST_MARKER in x), None)
    assert line is not None, out[-3000:]
    return line


def _commit(line: str) -> str:
    match = re.search(r"commit=([0-9a-f]{64})", line)
    assert match, line
    return match.group(1)


@pytest.mark.parametrize(
    ("fmt", "firmware", "options"),
    [
        ("qcow2", "bios", ()),
        ("qcow2", "uefi", ()),
        ("raw", "uefi", ()),
        ("qcow2", "bios", ("--rootfs", "xfs")),
        ("qcow2", "uefi", ("--rootfs", "btrfs")),
        ("qcow2", "bios", ("--blueprint", str(DATA / "btrfs-subvolumes.toml"))),
    ],
)
def test_boots_to_selftest(
    fmt: str, firmware: str, options: tuple[str, ...], example_x86_64: ExampleImage, images: ImageBuilds
) -> None:
    built = images.get(fmt, example_x86_64.reference, *options)
    line = _boot(str(built.image), firmware, "--append", "imgbuild.selftest=1")
    assert _commit(line) == built.result["commit"]
    assert "imgbuild.selftest=1" in line and "root=UUID=" in line
