"""iso: the installer ISO, a hybrid ISO (BIOS/UEFI, CD or USB stick) that writes this pipeline's raw disk to
a machine's disk.

The medium (builder/iso/medium.py) boots the installer environment (builder/installer: the image's own
kernel, an initramfs of Debian's static busybox and a few unpacked Debian programs, init.sh) and carries the
raw disk as a sparse zstd payload under imgbuild/. The disk is the one every target of the pipeline
converts, so what is installed is exactly what `raw` gives for the same platform. The installer's settings
go on the medium's kernel command line: the volume id it finds the medium by, and from the blueprint
`installation_device` (imgbuild.install.device=) and `[customizations.installer] unattended`
(imgbuild.install.unattended=1).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from builder.arch import Arch
from builder.errors import ManifestError
from builder.installer.initramfs import installer_env
from builder.installer.medium_files import MEDIUM_DIR, write_medium_files
from builder.stages.context import BuildContext, Output
from builder.stages.sysroot import mount_problems, mounted_sysroot
from targets.base import Target, TargetPlan
from targets.platforms import Platform

# The kernel's IO-APIC timer check fails at random on emulated machines (TCG) and panics; real machines do
# not need it either way.
INSTALLER_ARGS = ("quiet", "no_timer_check")


def _medium() -> ModuleType:
    # Imported when used: builder.iso.medium imports targets.platforms, whose package imports this module.
    from builder.iso import medium

    return medium


def kernel_args(options: Mapping[str, Any], arch: Arch) -> str:
    medium = _medium()
    args = [*medium.console_args(arch, Platform(options["platform"])), *INSTALLER_ARGS]
    args.append(f"imgbuild.install.volid={options['volume_id']}")
    if options.get("device"):
        args.append(f"imgbuild.install.device={options['device']}")
    if options["unattended"]:
        args.append("imgbuild.install.unattended=1")
    if options["after"] != "poweroff":
        args.append(f"imgbuild.install.after={options['after']}")
    return " ".join(args)


class Iso(Target, name="iso"):
    help = "an installer ISO (BIOS/UEFI, CD or USB) that writes the raw disk to a machine's disk"
    filename = "install.iso"
    format = "iso"
    mime = "application/x-iso9660-image"
    # raw's platform: `build --type raw --type iso` deploys once and the ISO installs exactly that disk.
    platform = Platform.QEMU
    needs = ("disk", "deployment")
    uses_iso_metadata: ClassVar[bool] = True
    refers: ClassVar[Mapping[str, str]] = {"mounts[].partition": "filesystem"}

    @classmethod
    def stage_options(cls, plan: TargetPlan) -> dict[str, Any]:
        from builder.iso.metadata import resolve  # see _medium()

        meta = resolve(plan.iso, plan.os_release, plan.arch, "installer")
        installer = plan.installer
        return {
            **super().stage_options(plan),
            "mounts": [dict(m) for m in plan.mounts],
            "volume_id": meta.volume_id,
            "application_id": meta.application_id,
            "publisher": meta.publisher,
            "menu_title": meta.menu_title,
            **({"device": installer.device} if installer and installer.device else {}),
            "unattended": bool(installer and installer.unattended),
            "after": "poweroff",
        }

    @classmethod
    def problems(cls, options: Mapping[str, Any]) -> Any:
        return mount_problems(options["mounts"])

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        filename = options["filename"]
        if any(o.filename == filename for o in ctx.outputs):
            raise ManifestError(
                f"two outputs of the manifest are named {filename}",
                hint="give each target stage its own filename",
            )
        arch = Arch.parse(ctx.arch)
        medium = _medium()
        disk = ctx.require_disk()
        repo, commit = ctx.require_commit()
        outputs = ctx.workdir / "outputs"
        outputs.mkdir(exist_ok=True)
        dest = outputs / filename
        scratch = Path(tempfile.mkdtemp(prefix="scratch-iso-", dir=ctx.workdir))
        try:
            # The payload first: mounting (even read-only) must not come between the disk and its copy.
            payload, root_part = write_medium_files(disk, scratch / MEDIUM_DIR)
            env = installer_env(repo, commit, arch)
            ro_mounts = [{**m, "options": [*m.get("options", ()), "ro"]} for m in options["mounts"]]
            with mounted_sysroot(ctx, ro_mounts) as root:
                spec = medium.MediumSpec(
                    arch=arch,
                    volume_id=options["volume_id"],
                    application_id=options["application_id"],
                    publisher=options["publisher"],
                    menu_title=options["menu_title"],
                    kernel=env.kernel,
                    initrd=env.initrd,
                    kernel_args=kernel_args(options, arch),
                    files={
                        f"{MEDIUM_DIR}/{name}": scratch / MEDIUM_DIR / name
                        for name in ("disk.zst", "index", "install.conf")
                    },
                    efi_source=root / ctx.require_deployment(),
                )
                medium.write_iso(spec, dest, scratch)
        finally:
            shutil.rmtree(scratch)
        record: dict[str, Any] = _medium().check_written(dest, arch, options["volume_id"])
        record.update(
            disk_size=payload.image_size,
            payload_size=payload.compressed_bytes,
            payload_data=payload.data_bytes,
            payload_sha256=payload.sha256,
            root_partition=root_part.number,
            root_fstype=root_part.fstype,
            installer_kernel=env.kernel_version,
            unattended=bool(options["unattended"]),
        )
        meta = {"target": self.name, "platform": options["platform"], "arch": ctx.arch}
        ctx.outputs.append(Output(dest, self.format, filename, {**meta, **record}))
