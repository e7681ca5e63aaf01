"""target.<format>: the disk as the requested output file, checked after it is written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from builder.stages.context import BuildContext, Output
from builder.stages.registry import StageKind
from targets import qemu_img
from targets.formats import FORMATS, Format


class RawTarget(StageKind, kind="target.raw"):
    """The work disk is already a sparse raw image: it becomes the output as it is."""

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        disk = ctx.require_disk()
        qemu_img.check(disk, FORMATS[Format.RAW], disk.stat().st_size)
        ctx.outputs.append(Output(disk, Format.RAW.value, options["filename"]))


class Qcow2Target(StageKind, kind="target.qcow2"):
    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        disk = ctx.require_disk()
        spec = FORMATS[Format.QCOW2]
        dest = ctx.workdir / options["filename"]
        qemu_img.convert(disk, dest, spec, compress=options["compression"])
        qemu_img.check(dest, spec, disk.stat().st_size)
        ctx.outputs.append(Output(dest, Format.QCOW2.value, options["filename"]))
