"""Each target's post-write check passes on what the target writes and fails on the near misses a wrong
conversion would produce (a dynamic VHD, a POSIX tar, a monolithicSparse vmdk, an OVA out of order, a disk
without the partition a boot mode needs). Small disks made here with sfdisk; no root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import targets
from builder import run
from builder.errors import StageFailed
from targets.base import TargetPlan
from targets.platforms import Platform

MiB = 1 << 20
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS = "21686148-6449-6E6F-744E-656564454649"


def _disk(tmp: Path, *types: str) -> Path:
    disk = tmp / "work.raw"
    disk.write_bytes(b"")
    run.run(["truncate", "-s", str(8 * MiB), disk])
    layout = "label: gpt\n" + "".join(f"size=1MiB, type={t}\n" for t in types)
    run.run(["sfdisk", "--quiet", disk], input=layout.encode())
    with disk.open("r+b") as f:  # some data, so that conversions have something to carry
        f.seek(3 * MiB)
        f.write(b"imgbuild" * 4096)
    return disk


def _write(name: str, disk: Path, tmp: Path) -> tuple[Path, dict[str, Any]]:
    target = targets.get(name)()
    options = target.stage_options(TargetPlan(Platform.QEMU, False, ("bios", "uefi"), "test"))
    dest = tmp / options["filename"]
    scratch = tmp / f"scratch-{name}"
    scratch.mkdir()
    target.write(disk, dest, options, scratch)
    return dest, options


@pytest.mark.parametrize("name", ["qcow2", "raw", "vmdk", "vhd", "gce", "ova", "ami"])
def test_check_passes_on_what_the_target_writes(name: str, tmp_path: Path) -> None:
    disk = _disk(tmp_path, BIOS, ESP)
    dest, options = _write(name, disk, tmp_path)
    record = targets.get(name)().check(dest, disk, options)
    assert record["virtual_size"] == 8 * MiB


def test_vhd_rejects_a_dynamic_vhd(tmp_path: Path) -> None:
    disk = _disk(tmp_path, ESP)
    dest, options = _write("vhd", disk, tmp_path)
    run.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", disk, dest]
    )
    with pytest.raises(StageFailed):
        targets.get("vhd")().check(dest, disk, options)


def test_vhd_rounds_up_to_a_whole_mib(tmp_path: Path) -> None:
    disk = _disk(tmp_path, ESP)
    run.run(["truncate", "-s", str(8 * MiB + 4096), disk])
    dest, options = _write("vhd", disk, tmp_path)
    assert targets.get("vhd")().check(dest, disk, options)["virtual_size"] == 9 * MiB


def test_gce_rejects_a_posix_tar_and_a_second_member(tmp_path: Path) -> None:
    disk = _disk(tmp_path, ESP)
    dest, options = _write("gce", disk, tmp_path)
    (tmp_path / "disk.raw").symlink_to(disk)
    run.run(["tar", "--format=posix", "-S", "-hczf", dest, "-C", tmp_path, "disk.raw"])
    with pytest.raises(StageFailed, match="oldgnu"):
        targets.get("gce")().check(dest, disk, options)
    (tmp_path / "extra").write_text("x")
    run.run(["tar", "--format=oldgnu", "-S", "-hczf", dest, "-C", tmp_path, "disk.raw", "extra"])
    with pytest.raises(StageFailed, match="exactly"):
        targets.get("gce")().check(dest, disk, options)


def test_vmdk_rejects_monolithic_sparse(tmp_path: Path) -> None:
    disk = _disk(tmp_path, ESP)
    dest, options = _write("vmdk", disk, tmp_path)
    run.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", disk, dest])
    with pytest.raises(StageFailed, match="monolithicSparse"):
        targets.get("vmdk")().check(dest, disk, options)


def test_ova_rejects_the_wrong_order_and_a_bad_checksum(tmp_path: Path) -> None:
    disk = _disk(tmp_path, ESP)
    dest, options = _write("ova", disk, tmp_path)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    run.run(["tar", "-xf", dest, "-C", unpacked])
    run.run(["tar", "--format=ustar", "-cf", dest, "-C", unpacked, "disk.mf", "disk.ovf", "disk.vmdk"])
    with pytest.raises(StageFailed, match="in that order"):
        targets.get("ova")().check(dest, disk, options)
    manifest = (unpacked / "disk.mf").read_text()
    digest = manifest.split("SHA256(disk.ovf)= ")[1][:64]
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    (unpacked / "disk.mf").write_text(manifest.replace(digest, wrong))
    run.run(["tar", "--format=ustar", "-cf", dest, "-C", unpacked, "disk.ovf", "disk.mf", "disk.vmdk"])
    with pytest.raises(StageFailed, match="does not match its files"):
        targets.get("ova")().check(dest, disk, options)


def test_ami_needs_the_partition_of_each_boot_mode(tmp_path: Path) -> None:
    disk = _disk(tmp_path, ESP)  # no BIOS boot partition
    dest, options = _write("ami", disk, tmp_path)
    with pytest.raises(StageFailed, match="bios"):
        targets.get("ami")().check(dest, disk, options)
    assert targets.get("ami")().check(dest, disk, {**options, "boot_modes": ["uefi"]})["boot_modes"] == [
        "uefi"
    ]
