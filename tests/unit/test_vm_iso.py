"""builder/vm.py with ISO media: an ISO is recognised by its content and attached as a CD (SATA on the PC,
SCSI on arm64's virt machine), a USB stick or a disk; its kernel arguments cannot be changed at boot. The
boots themselves: tests/vm/test_live_iso_boot.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import run, vm
from builder.arch import Arch
from builder.errors import ImgbuildError
from builder.vm import Firmware, Medium


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree/hello").write_text("hello\n")
    out = tmp_path / "small.iso"
    run.run(["xorriso", "-as", "mkisofs", "-o", out, "-V", "SMALL", tmp_path / "tree"])
    return out


def test_an_iso_is_recognised_by_its_content(iso: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "disk.img"  # the name plays no part
    renamed.write_bytes(iso.read_bytes())
    assert vm.is_iso(renamed) and vm.image_format(renamed) == "iso"
    raw = tmp_path / "plain.raw"
    raw.write_bytes(b"\0" * 2 * 1024 * 1024)
    assert not vm.is_iso(raw)


@pytest.mark.parametrize(
    ("arch", "medium", "device"),
    [
        (Arch.X86_64, Medium.CDROM, "ide-cd,drive=cd0,bootindex=1"),
        (Arch.AARCH64, Medium.CDROM, "scsi-cd,drive=cd0,bootindex=1"),
        (Arch.X86_64, Medium.USB, "usb-storage,drive=disk0,removable=on,bootindex=1"),
        (Arch.AARCH64, Medium.DISK, "virtio-blk-pci,drive=disk0,bootindex=1"),
    ],
)
def test_medium_args(arch: Arch, medium: Medium, device: str, tmp_path: Path) -> None:
    args = vm.medium_args(arch, medium, tmp_path / "x", "raw")
    assert device in args
    if medium is Medium.CDROM:
        assert any("media=cdrom" in a and "readonly=on" in a for a in args)


def test_append_to_an_iso_is_refused_before_anything_starts(iso: Path) -> None:
    with pytest.raises(ImgbuildError, match="is an ISO: its kernel arguments are fixed") as err:
        vm.boot(iso, arch=Arch.X86_64, firmware=Firmware.BIOS, timeout=5, marker="x", append="a=b")
    assert err.value.hint and "[customizations.kernel] append" in err.value.hint


def test_only_an_iso_boots_as_cd_or_usb(tmp_path: Path) -> None:
    raw = tmp_path / "plain.raw"
    with open(raw, "wb") as f:
        f.truncate(2 * 1024 * 1024)
        f.seek(510)
        f.write(b"\x55\xaa")
    with pytest.raises(vm.NotAnImage, match="only an ISO boots as a cdrom"):
        vm.boot(raw, arch=Arch.X86_64, firmware=Firmware.BIOS, timeout=5, marker="x", medium=Medium.CDROM)
