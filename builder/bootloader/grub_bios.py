"""GRUB for BIOS on a GPT disk: boot.img in the MBR, core.img in the BIOS boot partition.

What grub-bios-setup does (it is not in bookworm's grub-pc-bin), in a few lines: write boot.img's code into
the MBR and tell it the LBA of core.img's first sector; core.img's first sector (diskboot.img) ends with a
block list telling it where the rest of core.img is. Offsets are from GRUB's i386/pc/boot.h.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

from builder.bootloader import BootloaderError, early_config, grub_mkimage, modules_for
from builder.disk.partition import SECTOR, Placed

PLATFORM = "i386-pc"
MBR_CODE_SIZE = 440  # bytes 440..511 hold the disk signature, the partition table and 0x55AA: keep them
KERNEL_SECTOR_OFFSET = 0x5C  # GRUB_BOOT_MACHINE_KERNEL_SECTOR: u64 LBA of core.img
DRIVE_CHECK_OFFSET = 0x66  # GRUB_BOOT_MACHINE_DRIVE_CHECK: a short jmp that grub-setup turns into NOPs
BLOCKLIST_OFFSET = SECTOR - 12  # GRUB_BOOT_MACHINE_LIST_SIZE: {u64 start, u16 len, u16 segment}
SHORT_JMP = 0xEB
NOP = 0x90
BIOS_MODULES = ("biosdisk",)


def install_grub_bios(
    image: Path,
    *,
    bios_boot: Placed,
    boot_part: Placed,
    boot_fs_uuid: str,
    grub_dir: Path,
    boot_fs: str,
    prefix: str = "/grub2",
) -> None:
    """Make a BIOS-bootable disk: core.img (finding /boot by `boot_fs_uuid`) and boot.img into `image`.

    `grub_dir` is an i386-pc module directory (the image's /usr/lib/grub/i386-pc, or the host's);
    grub.cfg is then read from `<prefix>/grub.cfg` on the /boot filesystem.
    """
    boot_img = grub_dir / "boot.img"
    if not boot_img.is_file():
        raise BootloaderError(f"{grub_dir} has no boot.img", hint="give an i386-pc GRUB module directory")
    modules = modules_for(grub_dir, boot_fs, BIOS_MODULES)
    config = early_config(boot_fs_uuid, prefix, f"(hd0,gpt{boot_part.number})")
    with tempfile.TemporaryDirectory(prefix="imgbuild-grub-bios-") as tmp:
        core_path = Path(tmp) / "core.img"
        grub_mkimage(
            platform=PLATFORM,
            grub_dir=grub_dir,
            output=core_path,
            modules=modules,
            config=config,
            prefix=prefix,
        )
        core = core_path.read_bytes()
    write_bios_boot(image, bios_boot=bios_boot, boot_img=boot_img.read_bytes(), core_img=core)


def write_bios_boot(image: Path, *, bios_boot: Placed, boot_img: bytes, core_img: bytes) -> None:
    """Write `core_img` at the start of the BIOS boot partition and `boot_img` into the MBR, both patched."""
    if len(boot_img) != SECTOR:
        raise BootloaderError(f"boot.img is {len(boot_img)} bytes, not {SECTOR}")
    if len(core_img) > bios_boot.size:
        raise BootloaderError(
            f"core.img ({len(core_img)} bytes) does not fit in the BIOS boot partition ({bios_boot.size})",
            hint="make the BIOS boot partition larger",
        )
    core_lba = bios_boot.start // SECTOR
    core = bytearray(core_img)
    _start, length, _segment = struct.unpack_from("<QHH", core, BLOCKLIST_OFFSET)
    sectors_after_first = -(-len(core_img) // SECTOR) - 1
    # grub-mkimage fills in the length and leaves start at its default (2, the sector after the MBR gap's
    # first one); anything else means this is not an i386-pc core.img.
    if length != sectors_after_first:
        raise BootloaderError(
            f"core.img's block list says {length} sectors, the file has {sectors_after_first} after the first"
        )
    struct.pack_into("<Q", core, BLOCKLIST_OFFSET, core_lba + 1)

    mbr_code = bytearray(boot_img[:MBR_CODE_SIZE])
    struct.pack_into("<Q", mbr_code, KERNEL_SECTOR_OFFSET, core_lba)
    # As grub-bios-setup does for hard disks: skip the jump over the "force drive 0x80 if the BIOS passed
    # a floppy number" workaround for buggy BIOSes.
    if mbr_code[DRIVE_CHECK_OFFSET] == SHORT_JMP:
        mbr_code[DRIVE_CHECK_OFFSET : DRIVE_CHECK_OFFSET + 2] = bytes((NOP, NOP))

    with open(image, "r+b") as f:
        f.seek(510)
        if f.read(2) != b"\x55\xaa":
            raise BootloaderError(f"{image} has no protective MBR; partition it first")
        f.seek(bios_boot.start)
        f.write(core)
        f.seek(0)
        f.write(mbr_code)
