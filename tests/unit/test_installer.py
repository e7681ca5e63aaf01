"""The installer environment's pure parts: the driver load order from modules.dep, the sparse payload (read
back as the installer's dd loop does), the installer's kernel arguments, and init.sh's syntax."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import zstandard

from builder import run
from builder.arch import Arch
from builder.installer import modules
from builder.installer.initramfs import INIT_SCRIPT
from builder.installer.payload import BLOCK, write_payload
from targets.iso import kernel_args

K = "kernel/drivers"
MODULES_DEP = (
    f"{K}/scsi/sr_mod.ko: {K}/cdrom/cdrom.ko {K}/scsi/scsi_mod.ko {K}/scsi/scsi_common.ko\n"
    f"{K}/cdrom/cdrom.ko:\n"
    f"{K}/scsi/scsi_mod.ko: {K}/scsi/scsi_common.ko\n"
    f"{K}/scsi/scsi_common.ko:\n"
    f"{K}/usb/storage/usb-storage.ko.xz: {K}/usb/core/usbcore.ko.xz {K}/scsi/scsi_mod.ko\n"
    f"{K}/usb/core/usbcore.ko.xz:\n"
    "kernel/sound/unrelated.ko:\n"
)


def test_load_order_puts_dependencies_first_and_skips_what_is_absent() -> None:
    order = modules.load_order(MODULES_DEP, ("sr_mod", "usb_storage", "not_there"))
    assert order == [
        "kernel/drivers/cdrom/cdrom.ko",
        "kernel/drivers/scsi/scsi_common.ko",
        "kernel/drivers/scsi/scsi_mod.ko",
        "kernel/drivers/scsi/sr_mod.ko",
        "kernel/drivers/usb/core/usbcore.ko.xz",
        "kernel/drivers/usb/storage/usb-storage.ko.xz",
    ]


def _sparse_disk(path: Path) -> bytes:
    """A 16 MiB sparse file: data in blocks 0, 3-4 and 15, and an allocated block of zeros (block 8)."""
    image = bytearray(16 * BLOCK)
    for block, byte in ((0, 1), (3, 2), (4, 3), (15, 4)):
        image[block * BLOCK + 100 : block * BLOCK + 200] = bytes([byte]) * 100
    with open(path, "wb") as f:
        f.truncate(len(image))
        for block in (0, 3, 4, 8, 15):
            f.seek(block * BLOCK)
            f.write(image[block * BLOCK : (block + 1) * BLOCK])
    return bytes(image)


def test_payload_holds_only_the_data_blocks_and_restores_the_disk(tmp_path: Path) -> None:
    image = _sparse_disk(tmp_path / "disk.raw")
    (tmp_path / "medium").mkdir()
    payload = write_payload(tmp_path / "disk.raw", tmp_path / "medium")
    assert payload.runs == ((0, 1), (3, 2), (15, 1))
    assert payload.data_bytes == 4 * BLOCK and payload.image_size == 16 * BLOCK
    assert (tmp_path / "medium/index").read_text() == "0 1\n3 2\n15 1\n"
    # What init.sh does: zero the image's range, then dd each run from the decompressed stream.
    restored = bytearray(payload.image_size)
    data = b""
    with open(tmp_path / "medium/disk.zst", "rb") as f:
        stream = zstandard.ZstdDecompressor().stream_reader(f)
        for start, count in payload.runs:
            chunk = stream.read(count * BLOCK)
            restored[start * BLOCK : (start + count) * BLOCK] = chunk
            data += chunk
    assert bytes(restored) == image
    assert hashlib.sha256(data).hexdigest() == payload.sha256


def test_payload_refuses_a_disk_that_is_not_whole_mib(tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(b"x" * 1000)
    with pytest.raises(ValueError, match="whole number of MiB"):
        write_payload(tmp_path / "disk.raw", tmp_path)


def _options(**extra: object) -> dict[str, object]:
    return {
        "platform": "qemu",
        "volume_id": "os-12-installer",
        "unattended": False,
        "after": "poweroff",
        **extra,
    }


def test_kernel_args_carry_the_label_and_the_blueprint_choices() -> None:
    plain = kernel_args(_options(), Arch.X86_64)
    assert plain.split() == [
        "console=tty0",
        "console=ttyS0,115200n8",
        "quiet",
        "no_timer_check",
        "imgbuild.install.volid=os-12-installer",
    ]
    chosen = kernel_args(_options(device="/dev/sda", unattended=True, after="reboot"), Arch.AARCH64)
    assert "console=ttyAMA0,115200n8" in chosen.split()
    assert chosen.endswith(
        "imgbuild.install.device=/dev/sda imgbuild.install.unattended=1 imgbuild.install.after=reboot"
    )


def test_init_script_is_valid_busybox_sh() -> None:
    run.run(["busybox", "sh", "-n", INIT_SCRIPT])
    assert os.access(INIT_SCRIPT, os.R_OK)
    text = INIT_SCRIPT.read_text()
    # Every Debian program is called by its full path: busybox prefers its own applets to PATH.
    for program in ("/sbin/sfdisk", "/sbin/blkdiscard", "/usr/bin/zstd", "/sbin/resize2fs", "/sbin/e2fsck"):
        assert program in text
