"""customizations.disk: the partition layout, checked as Image Builder checks it (research §1.2)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from builder.blueprint.model import (
    BtrfsPartition,
    BtrfsSubvolume,
    DiskCustomization,
    DiskType,
    FsType,
    LogicalVolume,
    LvmPartition,
    Partition,
    PartitionType,
    PlainPartition,
)
from builder.blueprint.policy import mountpoint_problem
from builder.blueprint.problem import KeyPath, Problem
from builder.blueprint.sizes import SizeError, parse_size

DISK: KeyPath = ("customizations", "disk")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_DOS_TYPE = re.compile(r"(0x)?[0-9A-Fa-f]{2}")
MAX_GPT_LABEL_UTF16_UNITS = 36
MAX_DOS_PARTITIONS = 4


def required_size(path: KeyPath, raw: Mapping[str, Any], key: str = "minsize") -> int:
    """`raw[key]` as bytes, greater than 0; Problem names `path.key` when it is missing or wrong."""
    if key not in raw:
        raise Problem(path, f"{key} is required")
    try:
        size = parse_size(raw[key])
    except SizeError as e:
        raise Problem((*path, key), str(e)) from e
    if size == 0:
        raise Problem((*path, key), "must be greater than 0")
    return size


def _fs_type(raw: Mapping[str, Any]) -> FsType | None:
    return FsType(raw["fs_type"]) if "fs_type" in raw else None


def _check_mount(path: KeyPath, mountpoint: str | None, fs_type: FsType | None, *, on_lv: bool) -> None:
    if fs_type in (FsType.SWAP, FsType.NONE):
        if mountpoint is not None:
            raise Problem((*path, "mountpoint"), f"a {fs_type} filesystem has no mount point")
        return
    if mountpoint is None:
        if fs_type is not None:
            raise Problem(path, f"a {fs_type} filesystem needs a mountpoint")
        return
    if problem := mountpoint_problem(mountpoint, boot_efi=not on_lv):
        raise Problem((*path, "mountpoint"), problem)
    if on_lv and mountpoint in ("/boot", "/boot/efi"):
        raise Problem((*path, "mountpoint"), f"{mountpoint} cannot be on a logical volume")
    if mountpoint == "/boot" and fs_type not in (None, FsType.EXT4, FsType.XFS):
        raise Problem((*path, "fs_type"), "/boot must be ext4 or xfs")
    if mountpoint == "/boot/efi" and fs_type not in (None, FsType.VFAT):
        raise Problem((*path, "fs_type"), "/boot/efi must be vfat")


def _partition_ids(path: KeyPath, raw: Mapping[str, Any], disk_type: DiskType) -> None:
    part_type = raw.get("part_type")
    if part_type is not None:
        pattern = _UUID if disk_type is DiskType.GPT else _DOS_TYPE
        if not pattern.fullmatch(part_type):
            what = "a GUID" if disk_type is DiskType.GPT else "two hex digits"
            raise Problem((*path, "part_type"), f"must be {what} on a {disk_type} disk")
    if disk_type is DiskType.DOS:
        for key in ("part_label", "part_uuid"):
            if key in raw:
                raise Problem((*path, key), "is only for gpt disks")
        return
    label = raw.get("part_label")
    if label is not None and len(label.encode("utf-16-le")) // 2 > MAX_GPT_LABEL_UTF16_UNITS:
        raise Problem((*path, "part_label"), "is longer than 36 UTF-16 characters")
    if "part_uuid" in raw and not _UUID.fullmatch(raw["part_uuid"]):
        raise Problem((*path, "part_uuid"), "must be a UUID")


def _partition(path: KeyPath, raw: Mapping[str, Any], disk_type: DiskType) -> Partition:
    _partition_ids(path, raw, disk_type)
    minsize = required_size(path, raw)
    ids = {k: raw.get(k) for k in ("part_type", "part_label", "part_uuid")}
    kind = PartitionType(raw.get("type", "plain"))
    if kind is PartitionType.PLAIN:
        fs_type = _fs_type(raw)
        _check_mount(path, raw.get("mountpoint"), fs_type, on_lv=False)
        return PlainPartition(minsize, raw.get("mountpoint"), raw.get("label"), fs_type, **ids)
    if kind is PartitionType.LVM:
        volumes = []
        for index, lv in enumerate(raw.get("logical_volumes", ())):
            lv_path = (*path, "logical_volumes", index)
            fs_type = _fs_type(lv)
            _check_mount(lv_path, lv.get("mountpoint"), fs_type, on_lv=True)
            volumes.append(
                LogicalVolume(
                    required_size(lv_path, lv), lv.get("name"), lv.get("mountpoint"), lv.get("label"), fs_type
                )
            )
        _unique_names(path, "logical_volumes", [v.name for v in volumes])
        return LvmPartition(minsize, raw.get("name"), tuple(volumes), **ids)
    subvolumes = []
    for index, sub in enumerate(raw["subvolumes"]):
        if sub["mountpoint"] == "/boot/efi":
            raise Problem((*path, "subvolumes", index, "mountpoint"), "/boot/efi cannot be a btrfs subvolume")
        if problem := mountpoint_problem(sub["mountpoint"]):
            raise Problem((*path, "subvolumes", index, "mountpoint"), problem)
        subvolumes.append(BtrfsSubvolume(sub["name"], sub["mountpoint"]))
    _unique_names(path, "subvolumes", [s.name for s in subvolumes])
    return BtrfsPartition(minsize, tuple(subvolumes), **ids)


def _unique_names(path: KeyPath, key: str, names: list[str | None]) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name is not None and name in seen:
            raise Problem((*path, key, index, "name"), f"duplicate name {name!r}")
        if name is not None:
            seen.add(name)


def _mountpoints(partition: Partition) -> list[tuple[KeyPath, str]]:
    if isinstance(partition, PlainPartition):
        return [((), partition.mountpoint)] if partition.mountpoint else []
    if isinstance(partition, LvmPartition):
        return [
            (("logical_volumes", i, "mountpoint"), lv.mountpoint)
            for i, lv in enumerate(partition.logical_volumes)
            if lv.mountpoint
        ]
    return [(("subvolumes", i, "mountpoint"), s.mountpoint) for i, s in enumerate(partition.subvolumes)]


def disk_from_document(raw: Mapping[str, Any]) -> DiskCustomization:
    disk_type = DiskType(raw.get("type", "gpt"))
    partitions = tuple(
        _partition((*DISK, "partitions", i), p, disk_type) for i, p in enumerate(raw.get("partitions", ()))
    )
    if disk_type is DiskType.DOS and len(partitions) > MAX_DOS_PARTITIONS:
        raise Problem((*DISK, "partitions"), "a dos disk holds at most 4 partitions")
    volumes = [i for i, p in enumerate(partitions) if not isinstance(p, PlainPartition)]
    if len(volumes) > 1:
        raise Problem((*DISK, "partitions", volumes[1]), "at most one lvm or btrfs partition is supported")
    seen: set[str] = set()
    for index, partition in enumerate(partitions):
        for sub_path, mountpoint in _mountpoints(partition):
            if mountpoint in seen:
                where = (*DISK, "partitions", index, *sub_path)
                raise Problem(
                    where if sub_path else (*where, "mountpoint"), f"duplicate mount point {mountpoint}"
                )
            seen.add(mountpoint)

    def optional_size(key: str) -> int | None:
        if key not in raw:
            return None
        try:
            return parse_size(raw[key])
        except SizeError as e:
            raise Problem((*DISK, key), str(e)) from e

    return DiskCustomization(
        partitions=partitions,
        type=DiskType(raw["type"]) if "type" in raw else None,
        minsize=optional_size("minsize"),
        start_offset=optional_size("start_offset"),
        sector_size=raw.get("sector_size"),
    )


def disk_to_dict(disk: DiskCustomization) -> dict[str, Any]:
    table: dict[str, Any] = {
        k: v
        for k, v in (
            ("type", disk.type and str(disk.type)),
            ("minsize", disk.minsize),
            ("start_offset", disk.start_offset),
        )
        if v is not None
    }
    if disk.sector_size is not None:
        table["sector_size"] = disk.sector_size
    table["partitions"] = [_partition_to_dict(p) for p in disk.partitions]
    return table


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, FsType) else v) for k, v in values.items() if v is not None}


def _partition_to_dict(partition: Partition) -> dict[str, Any]:
    table = _without_none(vars(partition))
    table["type"] = str(partition.type)
    if isinstance(partition, LvmPartition):
        table["logical_volumes"] = [_without_none(vars(lv)) for lv in partition.logical_volumes]
    if isinstance(partition, BtrfsPartition):
        table["subvolumes"] = [dict(vars(s)) for s in partition.subvolumes]
    return table
