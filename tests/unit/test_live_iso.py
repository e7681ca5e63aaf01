"""The live-iso target's plan and command line (the build and boots: tests/integration/test_live_iso.py,
tests/vm/test_live_iso_boot.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from builder.blueprint import Blueprint, parse_blueprint
from builder.errors import BlueprintError
from builder.manifest import Stage
from builder.plan import PlanOptions, plan
from targets.live_iso import disk_mount_units, live_kernel_args
from tests.unit.test_plan import FACTS

DEBIAN = {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}


def _stage(stages: tuple[Stage, ...], kind: str) -> dict[str, Any]:
    return next(dict(s.options) for s in stages if s.type == kind)


def test_plan_has_the_iso_ids_and_the_sysroot_mounts() -> None:
    facts = replace(FACTS, os_release=DEBIAN)
    manifest = plan(facts, Blueprint.empty(), ["live-iso"], PlanOptions())
    (pipeline,) = manifest.pipelines
    options = _stage(pipeline.stages, "target.live-iso")
    assert options["volume_id"] == "debian-12-live-x86_64"
    assert options["menu_title"] == "Debian GNU/Linux 12 (bookworm) (live)"
    assert options["platform"] == "qemu" and options["compression"] == "zstd"
    assert options["mounts"] == _stage(pipeline.stages, "bootloader.grub")["mounts"]


def test_blueprint_iso_ids_reach_the_plan() -> None:
    bp = parse_blueprint('[customizations.iso]\nvolume_id = "MYOS"\napplication_id = "My OS"\n', "toml")
    manifest = plan(replace(FACTS, os_release=DEBIAN), bp, ["live-iso", "qcow2"], PlanOptions())
    options = next(s.options for p in manifest.pipelines for s in p.stages if s.type == "target.live-iso")
    assert options["volume_id"] == "MYOS" and options["application_id"] == "My OS"
    assert options["publisher"] == "imgbuild"


def test_iso_section_without_an_iso_output_is_refused() -> None:
    bp = parse_blueprint('[customizations.iso]\nvolume_id = "MYOS"\n', "toml")
    with pytest.raises(BlueprintError, match=r"customizations\.iso applies only to ISO outputs"):
        plan(FACTS, bp, ["qcow2"], PlanOptions())


def test_live_kernel_args_replace_the_disk_root() -> None:
    bls = 'root=UUID=1234 rw rootflags=subvol=root console=ttyS0,115200n8 ostree=/ostree/boot.1/d/0 x="a b"'
    args = live_kernel_args(bls, "VOL", ["boot.mount", "boot-efi.mount"])
    assert args == (
        "root=live:CDLABEL=VOL rd.live.image rd.live.dir=LiveOS rd.live.squashimg=squashfs.img rw "
        'rootflags=subvol=root console=ttyS0,115200n8 ostree=/ostree/boot.1/d/0 x="a b" '
        "systemd.mask=boot.mount systemd.mask=boot-efi.mount"
    )


def test_disk_mount_units(tmp_path: Path) -> None:
    assert disk_mount_units(tmp_path) == []
    wants = tmp_path / "etc/systemd/system/local-fs.target.wants"
    wants.mkdir(parents=True)
    for name in ("boot.mount", "boot-efi.mount", "var-log.mount", "other.service"):
        (wants / name).symlink_to(f"../{name}")
    assert disk_mount_units(tmp_path) == ["boot-efi.mount", "boot.mount", "var-log.mount"]
