"""The live ISO of the example boots to the self-test marker with no disk attached: x86_64 as a CD under
SeaBIOS and as a USB stick under OVMF (the hybrid medium's ESP partition: the same FAT image that a CD's El
Torito EFI entry points to; a CD under OVMF, with Secure Boot enforced, is booted in
tests/vm/test_secureboot_iso.py); aarch64 as a CD under AAVMF. Three boots, two at a time
(tests/bootpool.py), the slowest (aarch64) first, from one build per arch (shared with
tests/integration/test_live_iso.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from builder.example import SELFTEST_KARG, ExampleImage
from tests.bootpool import Outcomes, boot_all, boot_image
from tests.imagebuilds import Built, ImageBuilds
from tests.integration.test_live_iso import live_iso

BOOTS = {
    "aarch64-uefi-cdrom": ("aarch64", "uefi", "cdrom"),
    "x86_64-bios-cdrom": ("x86_64", "bios", "cdrom"),
    "x86_64-uefi-usb": ("x86_64", "uefi", "usb"),
}


def _job(built: Built, arch: str, firmware: str, medium: str) -> Callable[[], str]:
    def boot() -> str:
        args = ("--arch", arch, "--firmware", firmware, "--medium", medium)
        return boot_image(built.target_file("live-iso"), *args, timeout=1200).line()

    return boot


@pytest.fixture(scope="module")
def boots(
    example_x86_64: ExampleImage, example_aarch64: ExampleImage, images: ImageBuilds
) -> tuple[Outcomes[str, str], dict[str, Built]]:
    built = {"x86_64": live_iso(images, example_x86_64), "aarch64": live_iso(images, example_aarch64)}
    jobs = {key: _job(built[arch], arch, firmware, medium) for key, (arch, firmware, medium) in BOOTS.items()}
    return boot_all(jobs), built


@pytest.mark.parametrize("key", list(BOOTS))
def test_live_iso_boots_to_the_selftest(key: str, boots: tuple[Outcomes[str, str], dict[str, Built]]) -> None:
    outcomes, built = boots
    arch = BOOTS[key][0]
    line = outcomes.outcome(key)
    assert f"commit={built[arch].result['commit']}" in line, line
    assert SELFTEST_KARG in line
    # The root is dmsquash-live's snapshot of the squashfs on the medium, not a disk.
    assert f"root=live:CDLABEL=debian-12-live-{arch}" in line
