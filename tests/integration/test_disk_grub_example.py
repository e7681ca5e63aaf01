"""GRUB images built from the example OS's own modules (what real builds use), with the host's grub-mkimage.

Needs the x86_64 example OS (`imgbuild example`, in .cache/examples/x86_64/repo): it fails, not skips,
without it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import paths, run
from builder.arch import Arch
from builder.bootloader.grub_bios import install_grub_bios
from builder.bootloader.grub_cfg import grub_has_blscfg
from builder.bootloader.grub_efi import build_grub_efi, find_image_efi_payload
from builder.disk import partition as pt

MIB = 1024 * 1024
REF = "debian/12/x86_64/example"


@pytest.fixture(scope="module")
def example_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    repo = paths.examples_dir() / "x86_64" / "repo"
    assert repo.is_dir(), f"build the example OS first (imgbuild example): {repo} is missing"
    root = tmp_path_factory.mktemp("example") / "root"
    root.mkdir()
    run.run(["ostree", f"--repo={repo}", "checkout", "--subpath=/usr/lib/grub", REF, root / "grub"])
    yield root


def test_image_grub_modules_make_a_bios_core(example_root: Path, tmp_path: Path) -> None:
    grub = example_root / "grub"
    assert not grub_has_blscfg(grub / "i386-pc")  # Debian's GRUB: the menuentry grub.cfg is needed
    image = tmp_path / "disk.raw"
    specs = [
        pt.PartitionSpec(
            "BIOS-BOOT", pt.BIOS_BOOT, MIB, "11111111-2222-4333-8444-555555555501", bootable=True
        ),
        pt.PartitionSpec("boot", pt.XBOOTLDR, None, "11111111-2222-4333-8444-555555555503"),
    ]
    bios, boot = pt.create_gpt(image, 32 * MIB, specs, disk_guid="D15CD15C-0000-4000-8000-000000000001")
    install_grub_bios(
        image, bios_boot=bios, boot_part=boot, boot_fs_uuid="x", grub_dir=grub / "i386-pc", boot_fs="xfs"
    )
    with open(image, "rb") as f:
        f.seek(bios.start + 500)
        assert struct.unpack("<Q", f.read(8))[0] == bios.start // 512 + 1
    pt.verify_gpt(image)


def test_image_grub_modules_make_an_efi_binary(example_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "BOOTX64.EFI"
    build_grub_efi(Arch.X86_64, example_root / "grub" / "x86_64-efi", out, boot_fs_uuid="x", prefix="/grub2")
    assert out.read_bytes()[:2] == b"MZ"
    assert find_image_efi_payload(example_root, Arch.X86_64) is None  # Debian ships no shim payload
