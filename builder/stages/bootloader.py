"""bootloader.grub: GRUB for BIOS (core.img in the BIOS boot partition, boot code in the MBR) and
for UEFI (the image's own shim/GRUB when it ships them, else GRUB EFI built with the host's
grub-mkimage from the image's modules), and grub.cfg (blscfg when the image's GRUB has it, else
menu entries from ostree's BLS entries).

No program of the target image runs: the aarch64 build uses the host's grub-mkimage with the image's arm64-efi
modules.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from builder.arch import Arch
from builder.bootloader import FS_MODULE
from builder.bootloader.efi_chain import DirTree, examine, require_secure_boot
from builder.bootloader.grub_bios import install_grub_bios
from builder.bootloader.grub_cfg import parse_bls_entries, write_grub_cfg
from builder.bootloader.grub_efi import (
    PAYLOAD_DIRS,
    build_grub_efi,
    esp_tree_from_payload,
    find_image_efi_payload,
)
from builder.disk.esp import populate_esp
from builder.errors import StageFailed
from builder.stages.context import BuildContext
from builder.stages.registry import StageKind
from builder.stages.sysroot import mount_problems, mounted_sysroot


def check_secure_boot(deployment: Path, arch: Arch, boot_fstype: str) -> None:
    """The deployment's own files, checked again at build time (a manifest may be run long after it was
    planned, or written by hand): SecureBootUnavailable unless they boot with Secure Boot enforced."""
    view = DirTree(deployment)
    kernels = sorted(
        k
        for k in view.listdir("usr/lib/modules")
        if (deployment / "usr/lib/modules" / k / "vmlinuz").is_file()
    )
    payload = next((d for d in PAYLOAD_DIRS if view.is_dir(d)), None)
    platforms = tuple(p for p in ("i386-pc", "x86_64-efi", "arm64-efi") if view.is_dir(f"usr/lib/grub/{p}"))
    info = examine(
        view,
        arch,
        payload=payload,
        kernel=kernels[-1] if kernels else None,
        grub_platforms=platforms,
        boot_fs_module=FS_MODULE.get(boot_fstype, boot_fstype),
    )
    require_secure_boot(str(deployment.name), info.secure_boot_problems)


class Grub(StageKind, kind="bootloader.grub"):
    needs = ("disk", "deployment")
    refers: ClassVar[Mapping[str, str]] = {
        "mounts[].partition": "filesystem",
        "boot_partition": "filesystem",
        "bios.partition": "partition",
        "efi.partition": "filesystem",
    }

    @classmethod
    def problems(cls, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        return mount_problems(options["mounts"])

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        deployment_dir = ctx.require_deployment()
        disk = ctx.require_disk()
        boot_part = ctx.partition(options["boot_partition"])
        arch = Arch.parse(ctx.arch)
        with mounted_sysroot(ctx, options["mounts"]) as root:
            deployment = root / deployment_dir
            boot = root / "boot"
            entries = parse_bls_entries(boot)
            if not entries:
                raise StageFailed("ostree wrote no boot entries under /boot/loader/entries")
            write_grub_cfg(
                boot, entries=entries, use_blscfg=options["config"] == "blscfg", timeout=options["timeout"]
            )
            if "bios" in options:
                install_grub_bios(
                    disk,
                    bios_boot=ctx.partition(options["bios"]["partition"]),
                    boot_part=boot_part,
                    boot_fs_uuid=options["boot_uuid"],
                    grub_dir=deployment / "usr/lib/grub/i386-pc",
                    boot_fs=options["boot_fstype"],
                )
            if options.get("secure_boot") == "require":
                check_secure_boot(deployment, arch, options["boot_fstype"])
            if "efi" in options:
                self._efi(options["efi"], ctx, deployment, arch, options["boot_uuid"])

    def _efi(
        self, efi: Mapping[str, Any], ctx: BuildContext, deployment: Path, arch: Arch, boot_uuid: str
    ) -> None:
        with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="esp-") as tmp:
            tree = Path(tmp)
            payload = find_image_efi_payload(deployment, arch) if efi["source"] == "image" else None
            if efi["source"] == "image" and payload is None:
                raise StageFailed("the plan expects the image's own EFI binaries, but none were found")
            if payload is not None:
                esp_tree_from_payload(payload, tree, arch=arch, boot_fs_uuid=boot_uuid, prefix="/grub2")
            else:
                name = "BOOTX64.EFI" if arch is Arch.X86_64 else "BOOTAA64.EFI"
                (tree / "EFI/BOOT").mkdir(parents=True)
                build_grub_efi(
                    arch,
                    deployment / "usr/lib/grub" / efi["platform"],
                    tree / "EFI/BOOT" / name,
                    boot_fs_uuid=boot_uuid,
                    prefix="/grub2",
                )
            populate_esp(ctx.require_disk(), ctx.partition(efi["partition"]), tree)
            shutil.rmtree(tree, ignore_errors=True)
