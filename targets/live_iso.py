"""live-iso: a hybrid ISO that boots the ostree deployment itself, read-only from a squashfs, writes in RAM.

The squashfs holds `LiveOS/rootfs.img`: the root filesystem of the disk the other targets convert (the
physical sysroot: `/ostree` with its deployment, repository and `boot.N` links), as dracut's dmsquash-live
expects it (`root=live:CDLABEL=<volume id> rd.live.image`). dmsquash-live puts a device-mapper snapshot
over it whose changes live in a sparse file in the initramfs's RAM, and mounts that as /sysroot; ostree's
own initramfs step (ostree-prepare-root) then finds the deployment from the BLS entry's `ostree=` argument,
as on a disk. (The overlayfs variant, `rd.live.overlay.overlayfs=1`, does not boot with Debian 12's dracut
059 under systemd: its generated sysroot.mount runs before anything creates /run/overlayfs.) The kernel,
the initramfs and the rest of the command line come from the BLS entry; the filesystems that exist only on
a disk (/boot, the ESP) get `systemd.mask=` for their mount units, or their missing devices would hold the
boot for 90 s each. Whether the image's initramfs can boot this way is read from the commit before anything
is built (`preflight`): dmsquash-live's scripts, and the squashfs and isofs drivers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from builder import run
from builder.arch import Arch
from builder.bootloader.grub_cfg import parse_bls_entries, split_kernel_args
from builder.errors import ImgbuildError, ManifestError, StageFailed
from builder.iso import initramfs, medium
from builder.iso.metadata import resolve
from builder.ostree.mounts import UNIT_DIR, WANTS_DIR
from builder.ostree.repoquery import CommitTree
from builder.stages.context import BuildContext, Output
from builder.stages.sysroot import mount_problems, mounted_sysroot
from targets.base import Target, TargetPlan
from targets.platforms import Platform

SQUASHFS_PATH = "LiveOS/squashfs.img"
ROOTFS_PATH = "LiveOS/rootfs.img"  # inside the squashfs
# The disk's root= means nothing on the medium: the live root replaces it (rootflags= still applies: the
# snapshot holds the same filesystem).
DISK_ONLY_ARGS = ("root=",)


class NotLiveBootable(ImgbuildError):
    """The image's initramfs cannot boot a live ISO."""


def live_problem(tree: CommitTree) -> str | None:
    """What the image's initramfs (every kernel's) lacks for a live boot, or None."""
    kernels = [k for k in tree.listdir("usr/lib/modules") if tree.is_regular(f"usr/lib/modules/{k}/vmlinuz")]
    if not kernels:
        return "it has no kernel at /usr/lib/modules/<version>/vmlinuz"
    for kernel in kernels:
        data = tree.read_bytes(f"usr/lib/modules/{kernel}/initramfs.img")
        if data is None:
            return f"it has no /usr/lib/modules/{kernel}/initramfs.img"
        try:
            names = initramfs.list_names(data)
        except initramfs.InitramfsUnreadable as e:
            return f"its initramfs for {kernel} cannot be read ({e})"
        builtin = tree.read_bytes(f"usr/lib/modules/{kernel}/modules.builtin") or b""
        problem = initramfs.live_boot_problem(names, builtin.decode("utf-8", "replace"))
        if problem is not None:
            return problem
    return None


def live_kernel_args(bls_options: str, volume_id: str, masked: list[str]) -> str:
    """The medium's command line: the live root, then the BLS entry's arguments but the disk's root."""
    live = [
        f"root=live:CDLABEL={volume_id}",
        "rd.live.image",
        "rd.live.dir=LiveOS",
        "rd.live.squashimg=squashfs.img",
    ]
    kept = [a for a in split_kernel_args(bls_options) if not a.startswith(DISK_ONLY_ARGS)]
    return " ".join([*live, *kept, *(f"systemd.mask={unit}" for unit in masked)])


def disk_mount_units(deployment: Path) -> list[str]:
    """The mount units the deployment enables for filesystems other than its root (imgbuild's
    `mount_style: units`): on the medium there is no such filesystem."""
    wants = deployment / UNIT_DIR / WANTS_DIR
    if not wants.is_dir():
        return []
    return sorted(p.name for p in wants.iterdir() if p.name.endswith(".mount"))


def copy_partition(disk: Path, start: int, size: int, dest: Path) -> None:
    """The bytes of one partition of `disk` as a sparse file (unused blocks stay holes)."""
    run.run(
        [
            "dd",
            f"if={disk}",
            f"of={dest}",
            "bs=4M",
            f"skip={start}",
            f"count={size}",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ]
    )


def make_squashfs(source: Path, dest: Path, compression: str) -> None:
    """A squashfs of the directory `source`."""
    run.run(
        ["mksquashfs", source, dest, "-noappend", "-no-progress", "-quiet", "-comp", compression],
        hint="is squashfs-tools installed?",
    )


class LiveIso(Target, name="live-iso"):
    help = "a live ISO (BIOS/UEFI, CD or USB) that boots the deployment from a squashfs, writes in RAM"
    filename = "live.iso"
    format = "iso"
    mime = "application/x-iso9660-image"
    # qemu's settings (the serial consoles every platform shares): `build --type qcow2 --type live-iso`
    # deploys once. The medium's own GRUB menu waits MediumSpec.timeout (5 s), whatever the platform.
    platform = Platform.QEMU
    needs = ("disk", "deployment")
    uses_iso_metadata: ClassVar[bool] = True
    refers: ClassVar[Mapping[str, str]] = {"mounts[].partition": "filesystem"}
    preflight_needs = ("commit",)

    @classmethod
    def stage_options(cls, plan: TargetPlan) -> dict[str, Any]:
        arch = plan.arch
        meta = resolve(plan.iso, plan.os_release, arch, "live")
        return {
            **super().stage_options(plan),
            "mounts": [dict(m) for m in plan.mounts],
            "volume_id": meta.volume_id,
            "application_id": meta.application_id,
            "publisher": meta.publisher,
            "menu_title": meta.menu_title,
            "compression": "zstd",
        }

    @classmethod
    def problems(cls, options: Mapping[str, Any]) -> Any:
        return mount_problems(options["mounts"])

    @classmethod
    def preflight(cls, options: Mapping[str, Any], ctx: BuildContext) -> None:
        cls.check_image(*ctx.require_commit())

    @classmethod
    def check_image(cls, repo: Path, commit: str) -> None:
        problem = live_problem(CommitTree(repo, commit))
        if problem is not None:
            raise NotLiveBootable(
                f"the image cannot boot from a live ISO: {problem}", hint=initramfs.LIVE_HINT
            )

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        filename = options["filename"]
        if any(o.filename == filename for o in ctx.outputs):
            raise ManifestError(
                f"two outputs of the manifest are named {filename}",
                hint="give each target stage its own filename",
            )
        arch = Arch.parse(ctx.arch)
        outputs = ctx.workdir / "outputs"
        outputs.mkdir(exist_ok=True)
        dest = outputs / filename
        scratch = Path(tempfile.mkdtemp(prefix="scratch-live-iso-", dir=ctx.workdir))
        try:
            # The root filesystem is copied before this stage mounts it (it is cleanly unmounted now).
            root_mount = next(m for m in options["mounts"] if m["target"] == "/")
            part = ctx.partition(root_mount["partition"])
            content = scratch / "squashfs-root"
            (content / "LiveOS").mkdir(parents=True)
            copy_partition(ctx.require_disk(), part.start, part.size, content / ROOTFS_PATH)
            squashfs = scratch / "squashfs.img"
            make_squashfs(content, squashfs, options["compression"])
            shutil.rmtree(content)
            with mounted_sysroot(ctx, options["mounts"]) as root:
                deployment = root / ctx.require_deployment()
                entries = parse_bls_entries(root / "boot")
                if not entries:
                    raise StageFailed("the deployment has no BLS entry under /boot/loader/entries")
                entry = entries[0]
                if not entry.initrd:
                    raise StageFailed(f"the BLS entry {entry.filename} has no initrd")
                spec = medium.MediumSpec(
                    arch=arch,
                    volume_id=options["volume_id"],
                    application_id=options["application_id"],
                    publisher=options["publisher"],
                    menu_title=options["menu_title"],
                    kernel=_in_boot(root, entry.linux),
                    initrd=_in_boot(root, entry.initrd[0]),
                    kernel_args=live_kernel_args(
                        entry.options, options["volume_id"], disk_mount_units(deployment)
                    ),
                    files={SQUASHFS_PATH: squashfs},
                    efi_source=deployment,
                )
                medium.write_iso(spec, dest, scratch)
                squashfs_size = squashfs.stat().st_size
        finally:
            shutil.rmtree(scratch)
        record: dict[str, Any] = medium.check_written(dest, arch, options["volume_id"])
        record["squashfs_size"] = squashfs_size
        meta = {"target": self.name, "platform": options["platform"], "arch": ctx.arch}
        ctx.outputs.append(Output(dest, self.format, filename, {**meta, **record}))


def _in_boot(root: Path, path: str) -> Path:
    """A BLS entry's path (relative to the /boot filesystem), never leaving it."""
    rel = PurePosixPath(path.lstrip("/"))
    if ".." in rel.parts:
        raise StageFailed(f"the BLS entry's path {path!r} leaves /boot")
    full = root / "boot" / rel
    if not os.path.realpath(full).startswith(os.path.realpath(root / "boot") + "/"):
        raise StageFailed(f"the BLS entry's path {path!r} leaves /boot")
    return full
