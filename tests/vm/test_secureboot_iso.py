"""Secure Boot, enforced, for the ISO targets (issue 17, item 4): the live ISO and the installer ISO of the
`secureboot` example variant (Debian's shim signed by Microsoft's UEFI CA, GRUB and kernel signed by
Debian), built in one run with `--secure-boot require`, boot under OVMF with Microsoft's keys enrolled (the
SMM build, q35 smm=on), and the guests report Secure Boot enabled.

- The live ISO, as a CD (the El Torito EFI image) and as a USB stick (the hybrid medium's GPT partition 2),
  reaches the self-test marker from the medium's squashfs.
- The unattended installer ISO, as a CD with an empty disk, installs and powers off; the installed disk then
  boots on its own, still under Secure Boot, to the self-test marker.

The negative (an unsigned GRUB refused by shim under this firmware) and the one-line refusal of an unsigned
chain are in tests/vm/test_secureboot.py and tests/unit/test_plan.py. Boots: 4 (the live ISO twice; the
install, then its disk, in one job), two at a time (tests/bootpool.py).
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
from tests.vm.test_secureboot import _assert_secure_boot

BLUEPRINT = Path(__file__).resolve().parents[1] / "data" / "secureboot-iso.toml"
LIVE_TIMEOUT = 900
INSTALL_TIMEOUT = 1500.0
DISK_TIMEOUT = 900


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


@pytest.fixture(scope="module")
def boots(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Outcomes[str, object]:
    disk = tmp_path_factory.mktemp("sb-install") / "disk.qcow2"
    jobs: dict[str, Callable[[], object]] = {
        "install": _install_then_boot(built.target_file("iso"), disk),
        "live-cdrom": _live(built.target_file("live-iso"), "cdrom"),
        "live-usb": _live(built.target_file("live-iso"), "usb"),
    }
    return boot_all(jobs)


def test_isos_are_planned_with_secure_boot_required(built: Built) -> None:
    assert built.stage_options("bootloader.grub").get("secure_boot") == "require"


@pytest.mark.parametrize("medium", ["cdrom", "usb"])
def test_live_iso_boots_with_secure_boot_enforced(
    boots: Outcomes[str, object], built: Built, medium: str
) -> None:
    out = boots.outcome(f"live-{medium}")
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
