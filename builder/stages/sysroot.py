"""Mounting the target's filesystems for the stages that work inside them.

Each such stage mounts what it needs for its own duration (one loop device per partition, since partition
device nodes do not appear without udev) and unmounts before it ends: no stage leaves a mount behind, and the
target stages read a disk whose filesystems are all cleanly unmounted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from builder import faults
from builder.devices import ReleaseStack, loop_device, mounted
from builder.stages.context import BuildContext


def mount_problems(mounts: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, str]]:
    """The `mounts` option of a stage working in the sysroot: one root, each target once."""
    targets = [m["target"] for m in mounts]
    if "/" not in targets:
        yield "mounts", "no mount has target '/': the sysroot needs its root filesystem"
    for index, target in enumerate(targets):
        if target in targets[:index]:
            yield f"mounts[{index}].target", f"{target} is mounted twice"


@contextmanager
def mounted_sysroot(ctx: BuildContext, mounts: Sequence[Mapping[str, Any]]) -> Iterator[Path]:
    """Mount `mounts` (root first, then nested ones) under a fresh directory; yield that root."""
    disk = ctx.require_disk()
    root = ctx.workdir / "sysroot"
    root.mkdir(exist_ok=True)
    with ReleaseStack() as stack:
        for mount in sorted(mounts, key=lambda m: m["target"].count("/") if m["target"] != "/" else 0):
            part = ctx.partition(mount["partition"])
            device = stack.enter_context(loop_device(disk, offset=part.start, size=part.size))
            target = root / mount["target"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            stack.enter_context(
                mounted(device, target, fstype=mount["fstype"], options=mount.get("options", ()))
            )
        faults.point("the mounted sysroot")  # a stage's work in these filesystems starts here
        yield root
