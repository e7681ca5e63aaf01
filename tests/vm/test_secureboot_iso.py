"""Secure Boot, enforced, for the ISO targets (issue 17, item 4): the live ISO and the installer ISO of the
`secureboot` example variant (Debian's shim signed by Microsoft's UEFI CA, GRUB and kernel signed by
Debian), built in one run with `--secure-boot require`, boot under OVMF with Microsoft's keys enrolled (the
SMM build, q35 smm=on), and the guests report Secure Boot enabled.

- The live ISO, as a CD (the El Torito EFI image), reaches the self-test marker from the medium's squashfs.
  (As a USB stick the firmware reads the same FAT image, as the medium's GPT partition 2; the USB path of
  the medium is booted without Secure Boot in tests/vm/test_live_iso_boot.py.)
- The unattended installer ISO, as a CD with an empty disk, installs and powers off; the installed disk then
  boots on its own, still under Secure Boot, to the self-test marker.

- The negative: the default example's live ISO (a GRUB built here, unsigned; it boots under plain OVMF in
  tests/vm/test_live_iso_boot.py) is refused by this firmware ("Access Denied"), and no kernel starts.

The one-line refusal of an unsigned chain with `--secure-boot require` is in tests/unit/test_plan.py.
Boots: 4 (the live ISO; the install, then its disk, in one job; the unsigned live ISO, which stops in the
firmware within seconds), two at a time (tests/bootpool.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from builder import run, vm
from builder.arch import Arch
from builder.example import SELFTEST_KARG, SELFTEST_MARKER, ExampleImage
from builder.example_secureboot import Variant, build_variant
from tests.bootpool import GUEST_SMP, Outcomes, boot_all, boot_image
from tests.imagebuilds import Built, ImageBuilds
from tests.integration.test_live_iso import live_iso
from tests.vm.test_secureboot import _assert_secure_boot

BLUEPRINT = Path(__file__).resolve().parents[1] / "data" / "secureboot-iso.toml"
LIVE_TIMEOUT = 900
INSTALL_TIMEOUT = 1500.0
DISK_TIMEOUT = 900
# OVMF, having refused every boot option: the unsigned medium's loader, then its own EFI shell.
NO_BOOT = "No bootable option or device was found"


@pytest.fixture(scope="module")
def variant() -> ExampleImage:
    return build_variant(Variant.SECUREBOOT, Arch.X86_64)


@pytest.fixture(scope="module")
def built(variant: ExampleImage, images: ImageBuilds) -> Built:
    opts = ("--blueprint", str(BLUEPRINT), "--secure-boot", "require")
    return images.multi(("live-iso", "iso"), variant.reference, *opts)


def _live(iso: Path, medium: str) -> Callable[[], str]:
    def job() -> str:
        argv = ("--arch", "x86_64", "--firmware", "uefi-secure", "--medium", medium)
        return boot_image(iso, *argv, timeout=LIVE_TIMEOUT).console

    return job


def _install_then_boot(iso: Path, disk: Path) -> Callable[[], tuple[vm.BootResult, str, str]]:
    """Install from the ISO onto the empty `disk` under Secure Boot (until the installer powers off), then
    boot the installed disk under Secure Boot: the installer's result and console, and the disk's console."""

    def job() -> tuple[vm.BootResult, str, str]:
        run.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16G"])
        console = io.StringIO()
        installed = vm.boot_installer(
            iso,
            vm.Medium.CDROM,
            disk,
            arch=Arch.X86_64,
            firmware=vm.Firmware.UEFI_SECURE,
            timeout=INSTALL_TIMEOUT,
            smp=GUEST_SMP,
            console=console,
        )
        # Booted as installed: the self-test argument is the blueprint's, not an edit of the disk.
        argv = ("--arch", "x86_64", "--firmware", "uefi-secure")
        return installed, console.getvalue(), boot_image(disk, *argv, timeout=DISK_TIMEOUT).console

    return job


def _unsigned_live(iso: Path) -> Callable[[], str]:
    def job() -> str:
        argv = ("--arch", "x86_64", "--firmware", "uefi-secure", "--medium", "cdrom", "--marker", NO_BOOT)
        return boot_image(iso, *argv, timeout=LIVE_TIMEOUT).console

    return job


@pytest.fixture(scope="module")
def boots(
    built: Built,
    example_x86_64: ExampleImage,
    images: ImageBuilds,
    tmp_path_factory: pytest.TempPathFactory,
) -> Outcomes[str, object]:
    disk = tmp_path_factory.mktemp("sb-install") / "disk.qcow2"
    unsigned = live_iso(images, example_x86_64).target_file("live-iso")
    jobs: dict[str, Callable[[], object]] = {
        "install": _install_then_boot(built.target_file("iso"), disk),
        "live-cdrom": _live(built.target_file("live-iso"), "cdrom"),
        "unsigned-live-cdrom": _unsigned_live(unsigned),
    }
    return boot_all(jobs)


def test_isos_are_planned_with_secure_boot_required(built: Built) -> None:
    assert built.stage_options("bootloader.grub").get("secure_boot") == "require"


def test_live_iso_boots_with_secure_boot_enforced(boots: Outcomes[str, object], built: Built) -> None:
    out = boots.outcome("live-cdrom")
    assert isinstance(out, str)
    _assert_secure_boot(out)
    line = next(x for x in out.splitlines() if SELFTEST_MARKER in x)
    # The root is dmsquash-live's snapshot of the medium's squashfs, and the deployment is this build's.
    assert f"commit={built.result['commit']}" in line and "root=live:CDLABEL=" in line, line


def test_installer_iso_installs_under_secure_boot_and_the_disk_boots(
    boots: Outcomes[str, object], built: Built
) -> None:
    outcome = boots.outcome("install")
    assert isinstance(outcome, tuple)
    installed, install_console, disk_console = outcome
    # The installer ran to its power-off (no marker asked: a timeout would have raised BootTimeout) under
    # the enforcing firmware: shim -> the medium's signed GRUB -> the image's signed kernel, each verified
    # (an unsigned GRUB stops at shim's "Security Violation", tests/vm/test_secureboot.py). Its kernel runs
    # with `quiet`, so it prints no Secure Boot line; the installed system reports the state below.
    assert installed.marker_line is None, installed
    assert "Booting `Debian GNU/Linux 12 (bookworm) (installer)'" in install_console, install_console[-3000:]
    assert "imgbuild-installer: INSTALL-DONE /dev/vda" in install_console, install_console[-3000:]
    _assert_secure_boot(disk_console)
    line = next(x for x in disk_console.splitlines() if SELFTEST_MARKER in x)
    assert f"commit={built.result['commit']}" in line and SELFTEST_KARG in line, line


def test_unsigned_live_iso_does_not_boot_with_secure_boot(boots: Outcomes[str, object]) -> None:
    out = boots.outcome("unsigned-live-cdrom")
    assert isinstance(out, str)
    assert 'failed to load Boot0001 "UEFI QEMU DVD-ROM' in out and "Access Denied" in out, out[-3000:]
    assert "Linux version" not in out and "IMGBUILD-SECUREBOOT" not in out
