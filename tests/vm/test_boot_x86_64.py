"""x86_64 images built from the example OS boot under SeaBIOS and OVMF (TCG). Every boot of this module runs
in one pool, two at a time (tests/bootpool.py):
- the self-test marker, for each format, firmware, root filesystem and btrfs subvolumes;
- the image built from the end-to-end blueprint reaches the marker (its kernel.append carries
  imgbuild.selftest=1, so no argument is added at boot);
- without imgbuild.selftest=1 the example boots normally: no self-test line, a login prompt on the serial
  console (systemd's getty generator follows console=), and root cannot log in without a password.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from builder.example import SELFTEST_KARG, SELFTEST_MARKER, ExampleImage
from tests.bootpool import Booted, Outcomes, boot_all, boot_image
from tests.imagebuilds import ImageBuilds

DATA = Path(__file__).resolve().parents[1] / "data"
BLUEPRINT = DATA / "e2e-blueprint.toml"
Case = tuple[str, str, tuple[str, ...]]
CASES: list[Case] = [
    ("qcow2", "bios", ()),
    ("qcow2", "uefi", ()),
    ("raw", "uefi", ()),
    ("qcow2", "bios", ("--rootfs", "xfs")),
    ("qcow2", "uefi", ("--rootfs", "btrfs")),
    ("qcow2", "bios", ("--blueprint", str(DATA / "btrfs-subvolumes.toml"))),
]
# agetty prints /etc/issue ("Debian GNU/Linux 12 <host> ttyS0") on its own line, then the prompt without a
# newline: the login boot waits for the line.
ISSUE = "Debian GNU/Linux 12 debian-ostree ttyS0"


def _commit(line: str) -> str:
    match = re.search(r"commit=([0-9a-f]{64})", line)
    assert match, line
    return match.group(1)


@pytest.fixture(scope="module")
def booted(example_x86_64: ExampleImage, images: ImageBuilds) -> Outcomes[object, Booted]:
    """Each image built (once per session) and booted, two at a time."""
    reference = example_x86_64.reference

    def selftest(fmt: str, firmware: str, options: tuple[str, ...]) -> Booted:
        built = images.get(fmt, reference, *options)
        return boot_image(built.image, "--firmware", firmware, "--append", SELFTEST_KARG, timeout=600)

    def blueprint() -> Booted:
        built = images.get("qcow2", reference, "--blueprint", str(BLUEPRINT))
        return boot_image(built.image, "--firmware", "uefi", timeout=600)

    def login() -> Booted:
        return boot_image(
            images.get("qcow2", reference).image, "--firmware", "bios", "--marker", ISSUE, timeout=600
        )

    jobs: dict[object, Callable[[], Booted]] = {"blueprint": blueprint, "login": login}
    jobs |= {case: partial(selftest, *case) for case in CASES}
    return boot_all(jobs)


@pytest.mark.parametrize(("fmt", "firmware", "options"), CASES)
def test_boots_to_selftest(
    fmt: str,
    firmware: str,
    options: tuple[str, ...],
    booted: Outcomes[object, Booted],
    example_x86_64: ExampleImage,
    images: ImageBuilds,
) -> None:
    built = images.get(fmt, example_x86_64.reference, *options)
    console = booted.outcome((fmt, firmware, options))
    line = console.line()
    assert line, console.console[-3000:]
    assert _commit(line) == built.result["commit"]
    assert "imgbuild.selftest=1" in line and "root=UUID=" in line


def test_blueprint_image_boots(
    booted: Outcomes[object, Booted], example_x86_64: ExampleImage, images: ImageBuilds
) -> None:
    built = images.get("qcow2", example_x86_64.reference, "--blueprint", str(BLUEPRINT))
    console = booted.outcome("blueprint")
    line = console.line(SELFTEST_MARKER)
    assert f"commit={built.result['commit']}" in line, console.console[-3000:]
    assert "systemd.show_status=1" in line


def test_normal_boot_reaches_serial_login(booted: Outcomes[object, Booted]) -> None:
    console = re.sub(r"\x1b\[[0-9;]*m", "", booted.outcome("login").console)  # systemd colours its lines
    assert "Serial Getty on ttyS0" in console
    assert SELFTEST_MARKER not in console
    assert "[FAILED]" not in console, console[-4000:]
