"""The per-platform settings table: every platform and architecture is covered, and Ignition's platform id is
added only to images that use Ignition."""

from __future__ import annotations

import pytest

import targets
from builder.arch import Arch
from builder.errors import ImgbuildError
from targets.platforms import PLATFORMS, Platform, parse_platform, settings


@pytest.mark.parametrize("platform", list(Platform))
@pytest.mark.parametrize("arch", list(Arch))
def test_every_platform_and_arch_has_a_serial_console(platform: Platform, arch: Arch) -> None:
    plain = settings(platform, arch, ignition=False)
    serial = "console=ttyS0,115200n8" if arch is Arch.X86_64 else "console=ttyAMA0,115200n8"
    assert serial in plain.kernel_args
    assert not any(k.startswith("ignition.") for k in plain.kernel_args)
    assert plain.grub_timeout >= 0
    with_ignition = settings(platform, arch, ignition=True)
    assert with_ignition.kernel_args[-1] == f"ignition.platform.id={PLATFORMS[platform].ignition_id}"


def test_ignition_ids_are_ignitions_names() -> None:
    ids = {p.value: PLATFORMS[p].ignition_id for p in Platform}
    assert ids == {p: p for p in ("qemu", "metal", "aws", "azure", "gcp", "vmware")}


def test_aws_aarch64_serial_is_ttys0_last() -> None:
    kargs = settings(Platform.AWS, Arch.AARCH64, ignition=False).kernel_args
    assert kargs[-1] == "console=ttyS0,115200n8"


def test_targets_without_ignition_share_settings_on_x86_64() -> None:
    """What lets `build --type qcow2 --type vmdk --type gce` deploy once for an image without Ignition."""
    found = {settings(t.platform, Arch.X86_64, ignition=False) for t in targets.all_targets().values()}
    assert len(found) == 1


def test_every_target_names_a_platform_and_metal_waits_longer() -> None:
    assert {t.platform for t in targets.all_targets().values()} <= set(Platform)
    assert PLATFORMS[Platform.METAL].grub_timeout > PLATFORMS[Platform.QEMU].grub_timeout


def test_parse_platform() -> None:
    assert parse_platform(" AWS ") is Platform.AWS
    with pytest.raises(ImgbuildError, match="unknown platform 'mars'"):
        parse_platform("mars")
