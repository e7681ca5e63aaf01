"""The planner: a pure function from (image facts, blueprint, output targets, options) to a manifest.

No I/O: the same inputs give a byte-identical manifest. UUIDs come from a seed derived from the inputs (or
given with --seed). The disk layout follows bootc-image-builder's: BIOS boot 1 MiB (x86_64), ESP 501 MiB,
/boot 1 GiB, extra /var/... partitions from the blueprint, root last filling the disk.

The disk fits the content: the root filesystem gets the image's content (the bytes of its files) plus a
margin of half of it and 1 GiB (room for /var, logs and the objects of a first update), rounded up to
256 MiB; clouds grow the root filesystem on first boot. A --size or blueprint size that is larger wins.

Each output target runs on a platform (targets/platforms.py) whose settings (kernel arguments, GRUB timeout)
are baked into the deployment: targets whose settings agree share one pipeline (one deployment, one disk),
targets whose settings differ get a pipeline of their own in the same manifest.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from builder.arch import Arch
from builder.blueprint import Blueprint, BtrfsPartition, DiskCustomization, DiskType, PlainPartition
from builder.bootloader.efi_chain import require_secure_boot
from builder.customize.passwords import crypt_passwords
from builder.errors import BlueprintError, NotBootable
from builder.facts import ImageFacts
from builder.manifest import Manifest, Pipeline, Source, Stage, canonical_json
from targets import get as get_target
from targets.base import Target, TargetPlan
from targets.platforms import PLATFORMS, ImageSettings, Platform, settings

MiB = 1 << 20
GiB = 1 << 30
BIOS_BOOT_SIZE = 1 * MiB
ESP_SIZE = 501 * MiB
BOOT_SIZE = 1 * GiB
# The root filesystem's default size: content + ROOT_MARGIN_FRACTION of it + ROOT_MARGIN, rounded up to
# ROOT_ROUNDING.
ROOT_MARGIN = 1 * GiB
ROOT_MARGIN_FRACTION = 0.5
ROOT_ROUNDING = 256 * MiB
# When the image's content size is unknown (facts from an older cache): layers compress about 1:3.
COMPRESSION_GUESS = 3
GPT_OVERHEAD = 2 * MiB  # first MiB (alignment, primary GPT) and the backup GPT at the end

BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
XBOOTLDR_GUID = "BC13C2FF-59E6-4262-A352-B275FD6F7172"
LINUX_DATA_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ROOT_GUID = {
    Arch.X86_64: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    Arch.AARCH64: "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
}


class Rootfs(enum.StrEnum):
    EXT4 = "ext4"
    XFS = "xfs"
    BTRFS = "btrfs"


@dataclass(frozen=True)
class PlanOptions:
    rootfs: Rootfs = Rootfs.EXT4
    size: int | None = None  # bytes; grown when the layout needs more
    seed: str | None = None
    compression: bool = False
    stateroot: str = "default"
    platform: Platform | None = None  # overrides every target's own platform
    secure_boot: bool = False  # --secure-boot require: refuse an image that cannot boot with Secure Boot


class _Ids:
    """Deterministic identifiers derived from the seed."""

    def __init__(self, seed: str) -> None:
        self.seed = seed

    def _digest(self, name: str) -> bytes:
        return hashlib.sha256(f"{self.seed}\0{name}".encode()).digest()

    def uuid(self, name: str) -> str:
        return str(uuid.UUID(bytes=self._digest(name)[:16], version=4))

    def vfat(self, name: str) -> str:
        h = self._digest(name)[:4].hex().upper()
        return f"{h[:4]}-{h[4:]}"


def _round_up(value: int, unit: int = MiB) -> int:
    return -(-value // unit) * unit


def _seed(facts: ImageFacts, blueprint: Blueprint, image: ImageSettings, opts: PlanOptions) -> str:
    """The seed of one pipeline: from its deployment's inputs, so the same disk gets the same UUIDs whatever
    the targets made from it."""
    if opts.seed is not None:
        return opts.seed
    return hashlib.sha256(
        canonical_json(
            [
                facts.digest,
                facts.arch.value,
                blueprint.to_dict(),
                opts.rootfs.value,
                opts.size,
                list(image.kernel_args),
                image.grub_timeout,
            ]
        )
    ).hexdigest()


def root_size(facts: ImageFacts) -> int:
    """The root filesystem's default (and least) size: the image's content plus the margin."""
    content = facts.content_size or COMPRESSION_GUESS * facts.size
    return _round_up(content + int(content * ROOT_MARGIN_FRACTION) + ROOT_MARGIN, ROOT_ROUNDING)


@dataclass(frozen=True)
class _Part:
    name: str  # the GPT partition name, and how the manifest refers to the partition
    type: str
    size: int | None  # None: fills the rest of the disk
    fstype: str | None  # None: no filesystem (BIOS boot)
    mountpoint: str | None
    label: str  # filesystem label
    part_uuid: str | None = None  # from the blueprint; else derived from the seed
    subvolume: str | None = None  # btrfs: the subvolume mounted at `mountpoint`
    subvolumes: tuple[tuple[str, str], ...] = ()  # btrfs: every (name, mountpoint) made in this filesystem


LABEL_MAX = {"ext4": 16, "btrfs": 255, "xfs": 12, "vfat": 11, "swap": 15}


def _label(text: str, fstype: str | None) -> str:
    limit = LABEL_MAX.get(fstype or "", 16)
    return text[:limit].upper() if fstype == "vfat" else text[:limit]


def _layout(facts: ImageFacts, blueprint: Blueprint, opts: PlanOptions) -> tuple[list[_Part], int]:
    if blueprint.disk is not None:
        return _disk_layout(facts, blueprint.disk, opts)
    sizes = {fs.mountpoint: fs.minsize for fs in blueprint.filesystems}
    rootfs = opts.rootfs.value
    parts = _required_parts(facts, opts, boot_size=_round_up(sizes.get("/boot", BOOT_SIZE)))
    for mountpoint in sorted(m for m in sizes if m.startswith("/var/")):
        if opts.rootfs is Rootfs.BTRFS:
            raise BlueprintError(
                f"customizations.filesystem: {mountpoint} cannot be a partition with a btrfs root",
                hint="with --rootfs btrfs only / and /boot may be sized",
            )
        name = mountpoint.strip("/").replace("/", "-")
        parts.append(
            _Part(name, LINUX_DATA_GUID, _round_up(sizes[mountpoint]), rootfs, mountpoint, name[:16])
        )
    root = _Part("root", ROOT_GUID[facts.arch], sizes.get("/", 0), rootfs, "/", "root")
    return _with_root(parts, root, facts, opts)


def _required_parts(
    facts: ImageFacts, opts: PlanOptions, *, boot_size: int = BOOT_SIZE, esp: bool = True, boot: bool = True
) -> list[_Part]:
    """What every layout has unless it brings its own: BIOS boot (x86_64 images with BIOS GRUB), ESP, /boot
    (ext4 under a btrfs root, else the root's filesystem)."""
    parts: list[_Part] = []
    if facts.arch is Arch.X86_64 and "i386-pc" in facts.grub_platforms:
        parts.append(_Part("bios", BIOS_BOOT_GUID, BIOS_BOOT_SIZE, None, None, ""))
    if esp:
        parts.append(_Part("esp", ESP_GUID, ESP_SIZE, "vfat", "/boot/efi", "EFI-SYSTEM"))
    if boot:
        bootfs = "ext4" if opts.rootfs is Rootfs.BTRFS else opts.rootfs.value
        parts.append(_Part("boot", XBOOTLDR_GUID, boot_size, bootfs, "/boot", "boot"))
    return parts


def _with_root(
    parts: list[_Part], root: _Part, facts: ImageFacts, opts: PlanOptions, minsize: int = 0
) -> tuple[list[_Part], int]:
    """`parts` with the root partition last, filling the disk: root at least `root_size` and at least the size
    asked for it (`root.size`); the disk at least `minsize` and --size."""
    root_min = max(root_size(facts), root.size or 0)
    parts = [*parts, dataclasses.replace(root, size=None)]
    fixed = sum(p.size or 0 for p in parts) + GPT_OVERHEAD
    size = max(opts.size or 0, minsize, fixed + _round_up(root_min))
    return parts, _round_up(size)


def _refuse_disk(what: str, hint: str) -> BlueprintError:
    return BlueprintError(f"customizations.disk: {what}", hint=hint)


def _disk_layout(facts: ImageFacts, disk: DiskCustomization, opts: PlanOptions) -> tuple[list[_Part], int]:
    """An explicit layout from [customizations.disk]: plain GPT partitions, the required ones added.

    The BIOS boot partition (x86_64) and, unless given, the ESP and /boot are added as in the default layout;
    the partition holding / goes last and grows to fill the disk.
    """
    if disk.type is DiskType.DOS:
        raise _refuse_disk(
            "type 'dos' is not supported", "image-based systems boot from GPT disks: use 'gpt'"
        )
    rootfs = opts.rootfs.value
    given: list[_Part] = []
    root: _Part | None = None
    for index, partition in enumerate(disk.partitions):
        if isinstance(partition, BtrfsPartition):
            volume = _btrfs_part(facts, partition, index)
            if volume.mountpoint == "/":
                root = volume
            else:
                given.append(volume)
            continue
        if not isinstance(partition, PlainPartition):
            raise _refuse_disk(
                f"partitions[{index}] is of type {partition.type}, which imgbuild cannot deploy into yet",
                "use plain partitions, or a btrfs partition with subvolumes",
            )
        fstype = partition.fs_type.value if partition.fs_type is not None else rootfs
        if fstype == "none":
            fstype = None  # type: ignore[assignment]
        mountpoint = partition.mountpoint
        default_name = {"/": "root", "/boot": "boot", "/boot/efi": "esp"}.get(
            mountpoint or "", (mountpoint or f"/{fstype or 'data'}{index}").strip("/").replace("/", "-")
        )
        name = partition.part_label or default_name
        default_type = {"/": ROOT_GUID[facts.arch], "/boot": XBOOTLDR_GUID, "/boot/efi": ESP_GUID}
        part_type = partition.part_type or default_type.get(mountpoint or "", LINUX_DATA_GUID)
        part = _Part(
            name=name,
            type=part_type.upper(),
            size=_round_up(partition.minsize),
            fstype=fstype,
            mountpoint=mountpoint,
            label=_label(partition.label or name, fstype),
            part_uuid=partition.part_uuid.lower() if partition.part_uuid else None,
        )
        if mountpoint == "/":
            root = part
        else:
            given.append(part)
    if root is None:
        raise _refuse_disk("no partition has mountpoint '/'", 'add a plain partition with mountpoint = "/"')
    mountpoints = [p.mountpoint for p in given if p.mountpoint]
    parts = _required_parts(facts, opts, esp="/boot/efi" not in mountpoints, boot="/boot" not in mountpoints)
    parts += given
    names = [p.name for p in [*parts, root]]
    if len(set(names)) != len(names):
        raise _refuse_disk(
            f"partition names are not unique: {names}", "give each partition its own part_label"
        )
    return _with_root(parts, root, facts, opts, minsize=disk.minsize or 0)


def _btrfs_part(facts: ImageFacts, partition: BtrfsPartition, index: int) -> _Part:
    """A btrfs partition holding subvolumes; if one of them is /, the partition is the root filesystem."""
    subvolumes = tuple((sub.name, sub.mountpoint) for sub in partition.subvolumes)
    if not subvolumes:
        raise _refuse_disk(f"partitions[{index}] (btrfs) has no subvolumes", "add [[...subvolumes]] entries")
    for _, mountpoint in subvolumes:
        if mountpoint == "/boot":
            raise _refuse_disk(
                f"partitions[{index}].subvolumes: /boot cannot be a btrfs subvolume",
                "ostree needs /boot as a filesystem of its own: give it a plain partition",
            )
    root = next((name for name, mountpoint in subvolumes if mountpoint == "/"), None)
    name = partition.part_label or ("root" if root else f"btrfs{index}")
    return _Part(
        name=name,
        type=(partition.part_type or (ROOT_GUID[facts.arch] if root else LINUX_DATA_GUID)).upper(),
        size=_round_up(partition.minsize),
        fstype="btrfs",
        mountpoint="/" if root else None,
        label=_label(name, "btrfs"),
        part_uuid=partition.part_uuid.lower() if partition.part_uuid else None,
        subvolume=root,
        subvolumes=subvolumes,
    )


def _kernel_args(
    facts: ImageFacts,
    blueprint: Blueprint,
    image: ImageSettings,
    ignition_id: str,
    root_uuid: str,
    root: _Part,
) -> list[str]:
    args = [f"root=UUID={root_uuid}", "rw"]
    if root.subvolume is not None:
        args.append(f"rootflags=subvol={root.subvolume}")
    args += facts.image_kargs
    args += image.kernel_args
    args += facts.composefs_kargs
    # A blueprint with [customizations.ignition] names the platform too: once is enough.
    args += [w for w in blueprint.kernel_arguments(ignition_platform=ignition_id) if w not in args]
    return args


@dataclass(frozen=True)
class _Group:
    """Targets that share one deployment: their platforms' settings agree."""

    image: ImageSettings
    platforms: tuple[Platform, ...]
    targets: tuple[tuple[type[Target], Platform], ...]

    @property
    def name(self) -> str:
        return "-".join(p.value for p in self.platforms)

    @property
    def ignition_id(self) -> str:
        return PLATFORMS[self.platforms[0]].ignition_id or Platform.METAL.value


def _groups(
    facts: ImageFacts, blueprint: Blueprint, target_names: Sequence[str], opts: PlanOptions
) -> list[_Group]:
    groups: dict[ImageSettings, _Group] = {}
    uses_ignition = facts.ignition or blueprint.ignition is not None
    for name in dict.fromkeys(target_names):  # each target once, in the order given
        target = get_target(name)
        platform = opts.platform or target.platform
        image = settings(platform, facts.arch, ignition=uses_ignition)
        group = groups.get(image, _Group(image, (), ()))
        platforms = group.platforms if platform in group.platforms else (*group.platforms, platform)
        groups[image] = _Group(image, platforms, (*group.targets, (target, platform)))
    return list(groups.values())


def plan(facts: ImageFacts, blueprint: Blueprint, targets: Sequence[str], opts: PlanOptions) -> Manifest:
    """The manifest that builds every target in `targets` (names from the targets registry)."""
    if not targets:
        raise ValueError("no output targets to plan")
    if opts.secure_boot:
        require_secure_boot(facts.reference, facts.secure_boot_problems)
    if blueprint.iso is not None and not any(get_target(t).uses_iso_metadata for t in targets):
        raise BlueprintError(
            "customizations.iso applies only to ISO outputs, and none is built",
            hint="remove [customizations.iso] or build an ISO type (live-iso)",
        )
    if blueprint.installer is not None and "iso" not in targets:
        raise BlueprintError(
            "customizations.installer and installation_device apply only to the installer ISO (iso), "
            "and it is not built",
            hint="remove them or build the iso type",
        )
    pipelines = tuple(
        _pipeline(facts, blueprint, group, opts) for group in _groups(facts, blueprint, targets, opts)
    )
    return Manifest(Source(facts.reference, facts.digest, facts.arch.value), pipelines)


def _checked_layout(facts: ImageFacts, blueprint: Blueprint, opts: PlanOptions) -> tuple[list[_Part], int]:
    """The partitions and disk size, or the BlueprintError that refuses the blueprint's layout."""
    parts, disk_size = _layout(facts, blueprint, opts)
    for mountpoint in ("/boot", "/"):
        part = next(p for p in parts if p.mountpoint == mountpoint)
        if part.fstype not in ("ext4", "xfs", "btrfs"):
            raise BlueprintError(
                f"{part.mountpoint} cannot be {part.fstype}", hint="use ext4, xfs or btrfs for / and /boot"
            )
    return parts, disk_size


def check_blueprint(blueprint: Blueprint, opts: PlanOptions, facts: ImageFacts | None, arch: Arch) -> None:
    """Every check `plan` makes of a blueprint on its own (the disk layout, the filesystems), for
    `imgbuild blueprint check`; without an image's facts, against a stand-in image of `arch` (the layout's
    checks do not depend on the image's content)."""
    _checked_layout(facts or _stand_in(arch), blueprint, opts)


def _stand_in(arch: Arch) -> ImageFacts:
    grub = ("i386-pc", "x86_64-efi") if arch is Arch.X86_64 else ("arm64-efi",)
    return ImageFacts(
        reference="",
        origin="",
        digest="",
        arch=arch,
        size=0,
        commit="",
        kernel=None,
        grub_platforms=grub,
        grub_blscfg=False,
        efi_payload=None,
        selinux_policy=None,
        composefs_kargs=(),
        composefs_reason=None,
        image_kargs=(),
        os_name="",
    )


def _pipeline(facts: ImageFacts, blueprint: Blueprint, group: _Group, opts: PlanOptions) -> Pipeline:
    seed = _seed(facts, blueprint, group.image, opts)
    ids = _Ids(seed)
    # Plain-text passwords never reach the manifest: hashed here, with salts from the seed (reproducible).
    name = blueprint.name
    blueprint = crypt_passwords(blueprint, seed=seed.encode())
    parts, disk_size = _checked_layout(facts, blueprint, opts)
    alignment = max(target.size_alignment for target, _ in group.targets)
    disk_size = _round_up(disk_size, alignment)
    uuids = {p.name: (ids.vfat(p.name) if p.fstype == "vfat" else ids.uuid(f"fs-{p.name}")) for p in parts}
    boot = next(p for p in parts if p.mountpoint == "/boot")
    root = next(p for p in parts if p.mountpoint == "/")
    mounts: list[dict[str, Any]] = [
        {"partition": root.name, "target": "/", "fstype": root.fstype},
        {"partition": boot.name, "target": "/boot", "fstype": boot.fstype},
    ]
    if root.subvolume is not None:
        mounts[0]["options"] = [f"subvol={root.subvolume}"]
    stages = [
        Stage(
            "container.import",
            {
                "reference": facts.reference,
                "digest": facts.digest,
                "arch": facts.arch.value,
                **facts.import_options,
            },
        ),
        Stage(
            "disk.partition",
            {
                "filename": f"disk-{group.name}.raw",
                "size": disk_size,
                "uuid": ids.uuid("disk"),
                "partitions": [
                    {
                        "name": p.name,
                        "type": p.type,
                        "size": p.size,
                        "uuid": p.part_uuid or ids.uuid(f"part-{p.name}"),
                    }
                    for p in parts
                ],
            },
        ),
    ]
    stages += [
        Stage("fs.mkfs", {"partition": p.name, "fstype": p.fstype, "uuid": uuids[p.name], "label": p.label})
        for p in parts
        if p.fstype is not None
    ]
    stages += [
        Stage("fs.btrfs-subvolumes", {"partition": p.name, "subvolumes": [name for name, _ in p.subvolumes]})
        for p in parts
        if p.subvolumes
    ]
    fstab: list[dict[str, Any]] = [
        {
            "where": p.mountpoint,
            "uuid": uuids[p.name],
            "fstype": p.fstype,
            "options": "umask=0077,shortname=winnt" if p.fstype == "vfat" else "defaults",
        }
        for p in sorted(parts, key=lambda p: p.mountpoint or "")
        if p.mountpoint not in (None, "/")
    ]
    fstab += [
        {"where": where, "uuid": uuids[p.name], "fstype": "btrfs", "options": f"subvol={name}"}
        for p in parts
        for name, where in p.subvolumes
        if where != "/"
    ]
    fstab.sort(key=lambda entry: str(entry["where"]))
    stages.append(
        Stage(
            "ostree.deploy",
            {
                "stateroot": opts.stateroot,
                "mounts": mounts,
                "kernel_args": _kernel_args(
                    facts, blueprint, group.image, group.ignition_id, uuids[root.name], root
                ),
                "origin": facts.origin,
                "readonly": True,
                "fstab": fstab,
                "mount_style": "units",
                "swap": [uuids[p.name] for p in parts if p.fstype == "swap"],
                **({"notes": [facts.composefs_reason]} if facts.composefs_reason else {}),
                **facts.deploy_options,
            },
        )
    )
    customizations = blueprint.to_dict().get("customizations")
    if customizations:
        stages.append(
            Stage(
                "ostree.customize",
                {"stateroot": opts.stateroot, "mounts": mounts, "blueprint": blueprint.to_dict()},
            )
        )
    if facts.selinux_policy:
        stages.append(
            Stage(
                "ostree.selinux",
                {"stateroot": opts.stateroot, "mounts": mounts, "policy": facts.selinux_policy},
            )
        )
    grub = _bootloader(facts, parts, mounts, boot, uuids[boot.name], group.image.grub_timeout)
    if opts.secure_boot:
        grub["secure_boot"] = "require"
    stages.append(Stage("bootloader.grub", grub))
    boot_modes = tuple(mode for mode, key in (("bios", "bios"), ("uefi", "efi")) if key in grub)
    machine = _MACHINE_NAME.sub("-", name).strip("-.")[:80] or "imgbuild"
    for target, platform in group.targets:
        options = target.stage_options(
            TargetPlan(
                platform,
                opts.compression,
                boot_modes,
                machine,
                arch=facts.arch,
                mounts=tuple(mounts),
                os_release=facts.os_release,
                iso=blueprint.iso,
                installer=blueprint.installer,
            )
        )
        stages.append(Stage(target.kind, options))
    return Pipeline(group.name, tuple(stages))


_MACHINE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _bootloader(
    facts: ImageFacts,
    parts: list[_Part],
    mounts: list[dict[str, Any]],
    boot: _Part,
    boot_uuid: str,
    timeout: int,
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "mounts": mounts,
        "boot_partition": boot.name,
        "boot_fstype": boot.fstype,
        "boot_uuid": boot_uuid,
        "config": "blscfg" if facts.grub_blscfg else "menu",
        "timeout": timeout,
        "chain": facts.boot_chain,
    }
    if any(p.type == BIOS_BOOT_GUID for p in parts):
        options["bios"] = {"partition": next(p.name for p in parts if p.type == BIOS_BOOT_GUID)}
    esp = next(p.name for p in parts if p.mountpoint == "/boot/efi")
    platform = "x86_64-efi" if facts.arch is Arch.X86_64 else "arm64-efi"
    if facts.efi_payload is not None:
        options["efi"] = {"partition": esp, "source": "image", "platform": platform}
    elif platform in facts.grub_platforms:
        options["efi"] = {"partition": esp, "source": "grub-mkimage", "platform": platform}
    elif facts.arch is Arch.AARCH64 or "bios" not in options:
        raise NotBootable(
            f"the image ships no EFI boot loader (no shim/GRUB EFI binaries and no /usr/lib/grub/{platform})",
            hint="add GRUB's EFI modules (or shim and GRUB) to the image",
        )
    return options
