"""GRUB for BIOS and UEFI, and the grub.cfg that boots ostree's BLS entries.

The GRUB images are self-contained: every module needed to find /boot, read grub.cfg and boot Linux is
built into core.img / the EFI binary, so /boot needs no module directory that could drift out of step with
the installed core (a classic "symbol not found" failure). The modules come from the OS image when it ships
them (its /usr/lib/grub/<platform>), else from the host; the host's grub-mkimage packs them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from builder import run
from builder.errors import ImgbuildError


class BootloaderError(ImgbuildError):
    """GRUB cannot be built or installed as asked."""


# Modules that every self-contained image must carry: without them GRUB cannot reach or read grub.cfg.
REQUIRED_MODULES = ("part_gpt", "search", "search_fs_uuid", "normal", "linux", "configfile")
# Modules added when the GRUB build has them: filesystems, the console, and the commands grub.cfg uses.
OPTIONAL_MODULES = (
    "part_msdos",
    "ext2",
    "xfs",
    "btrfs",
    "fat",
    "search_label",
    "echo",
    "test",
    "serial",
    "terminal",
    "boot",
    "gzio",
    "minicmd",
    "ls",
    "cat",
    "loadenv",
    "halt",
    "reboot",
    "sleep",
    "regexp",
    "blscfg",  # Fedora's GRUB: reads /loader/entries itself
)
# Which filesystem module reads each /boot filesystem type.
FS_MODULE = {"ext4": "ext2", "xfs": "xfs", "btrfs": "btrfs", "vfat": "fat"}


def modules_for(grub_dir: Path, boot_fs: str, platform_modules: Sequence[str]) -> list[str]:
    """The module list for grub-mkimage: required + the platform's + whatever optional ones exist."""
    if not (grub_dir / "moddep.lst").is_file():
        raise BootloaderError(
            f"{grub_dir} is not a GRUB module directory (no moddep.lst)",
            hint="give the image's or the host's /usr/lib/grub/<platform> directory",
        )
    fs_module = FS_MODULE.get(boot_fs)
    if fs_module is None:
        raise BootloaderError(f"GRUB cannot boot from a {boot_fs!r} /boot", hint="use ext4, xfs or btrfs")
    wanted = [*platform_modules, *REQUIRED_MODULES, fs_module]
    missing = [m for m in wanted if not (grub_dir / f"{m}.mod").is_file()]
    if missing:
        raise BootloaderError(f"{grub_dir} lacks the GRUB modules {', '.join(missing)}")
    extra = [m for m in OPTIONAL_MODULES if (grub_dir / f"{m}.mod").is_file() and m not in wanted]
    return [*wanted, *extra]


def early_config(boot_fs_uuid: str, prefix: str, fallback_root: str | None) -> str:
    """The config built into the image: find /boot by filesystem UUID and load its grub.cfg from there."""
    lines = []
    if fallback_root:
        # If the UUID search fails (a changed filesystem), the partition the installer put /boot in.
        lines.append(f"set root={fallback_root}")
    lines += [
        f"search --no-floppy --fs-uuid --set=root {boot_fs_uuid}",
        f"set prefix=($root){prefix}",
    ]
    return "\n".join(lines) + "\n"


def grub_mkimage(
    *, platform: str, grub_dir: Path, output: Path, modules: Sequence[str], config: str, prefix: str
) -> None:
    """Run the host's grub-mkimage with `config` embedded; `output` appears only when complete."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imgbuild-grub-") as tmp:
        cfg = Path(tmp) / "early.cfg"
        cfg.write_text(config)
        partial = Path(tmp) / "image"
        run.run(
            [
                "grub-mkimage",
                "--format",
                platform,
                "--directory",
                os.fspath(grub_dir),
                "--prefix",
                prefix,
                "--config",
                os.fspath(cfg),
                "--output",
                os.fspath(partial),
                *modules,
            ],
            hint=f"is {grub_dir} a {platform} GRUB module directory compatible with the host's GRUB?",
        )
        tmp_out = output.with_name(f".{output.name}.partial")
        tmp_out.write_bytes(partial.read_bytes())
        tmp_out.replace(output)
