"""disk.partition and fs.mkfs: a sparse disk file with a GPT, and its filesystems."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from builder import run
from builder.devices import loop_device, mounted
from builder.disk.mkfs import make_filesystem
from builder.disk.partition import PartitionError, PartitionSpec, create_gpt, layout
from builder.stages.context import BuildContext
from builder.stages.registry import StageKind


def _specs(options: Mapping[str, Any]) -> list[PartitionSpec]:
    return [
        PartitionSpec(
            name=p["name"],
            type_guid=p["type"],
            size=p["size"],
            uuid=p["uuid"],
            bootable=p.get("bootable", False),
        )
        for p in options["partitions"]
    ]


class Partition(StageKind, kind="disk.partition"):
    makes = ("disk",)
    defines: ClassVar[Mapping[str, str]] = {"partitions[].name": "partition"}

    @classmethod
    def problems(cls, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        try:
            layout(options["size"], _specs(options))
        except PartitionError as e:
            yield "partitions", e.message

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        disk = ctx.workdir / options["filename"]
        placed = create_gpt(disk, options["size"], _specs(options), disk_guid=options["uuid"])
        ctx.disk = disk
        ctx.partitions = {p.spec.name: p for p in placed}


class MakeFilesystem(StageKind, kind="fs.mkfs"):
    needs = ("disk",)
    refers: ClassVar[Mapping[str, str]] = {"partition": "partition"}
    defines: ClassVar[Mapping[str, str]] = {"partition": "filesystem"}

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        make_filesystem(
            ctx.require_disk(),
            ctx.partition(options["partition"]),
            options["fstype"],
            uuid=options["uuid"],
            label=options["label"],
        )


class BtrfsSubvolumes(StageKind, kind="fs.btrfs-subvolumes"):
    """Subvolumes at the top level of a btrfs filesystem, for a [customizations.disk] btrfs partition."""

    needs = ("disk",)
    refers: ClassVar[Mapping[str, str]] = {"partition": "filesystem"}

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        part = ctx.partition(options["partition"])
        top = ctx.workdir / f"btrfs-{options['partition']}"
        top.mkdir(exist_ok=True)
        with (
            loop_device(ctx.require_disk(), offset=part.start, size=part.size) as device,
            mounted(device, top, fstype="btrfs"),
        ):
            for name in options["subvolumes"]:
                (top / name).parent.mkdir(parents=True, exist_ok=True)
                run.run(["btrfs", "subvolume", "create", top / name])
        top.rmdir()
