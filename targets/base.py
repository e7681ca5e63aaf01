"""What every output target is: a stage kind `target.<name>` that writes one output file from the disk.

A target is one module under targets/ with its JSON Schema beside it (`targets/<name>.json`). Subclassing
`Target` with `name="..."` registers it both as the stage kind `target.<name>` (the manifest's registry) and
as a target (the planner's and CLI's registry, `targets.all_targets()`). The module owns everything about
its output: name and help text, the file it writes, the platform it runs on, the conversion, the checks made
after writing with the tool that consumes the format, and the fields it adds to its entry in result.json.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from builder.arch import Arch
from builder.blueprint.model import InstallerCustomization, IsoCustomization
from builder.errors import ManifestError
from builder.stages.context import BuildContext, Output
from builder.stages.registry import StageKind
from targets.platforms import Platform

MiB = 1 << 20
GiB = 1 << 30
_TARGETS: dict[str, type[Target]] = {}


@dataclass(frozen=True)
class TargetPlan:
    """What the planner knows when it writes a target's stage options."""

    platform: Platform
    compression: bool  # --compress
    boot_modes: tuple[str, ...]  # firmware the disk's bootloader stage installs for: "bios", "uefi"
    name: str  # the machine's name where a format has one (OVF): the blueprint's name, else "imgbuild"
    # What the ISO targets need: the deployment's filesystems as bootloader.grub mounts them (root first),
    # the image's arch and os-release, and the blueprint's [customizations.iso] (builder/iso/metadata.py).
    arch: Arch = Arch.X86_64
    mounts: tuple[Mapping[str, Any], ...] = ()
    os_release: Mapping[str, str] = field(default_factory=dict)
    iso: IsoCustomization | None = None
    installer: InstallerCustomization | None = None  # the installer ISO's disk choice (targets/iso.py)


class Target(StageKind):
    name: ClassVar[str]
    help: ClassVar[str]  # one line for `imgbuild --help`
    filename: ClassVar[str]  # the output file's name in the output directory
    format: ClassVar[str]  # result.json's "format"
    mime: ClassVar[str]  # what the compose service answers a download with
    platform: ClassVar[Platform]  # the default platform of this output (--platform overrides it)
    # Whether builder/commands/image.py makes `imgbuild NAME REF`: False when another command module offers
    # it (`imgbuild ami REF` builds the ami target, then registers the AMI: builder/commands/upload.py).
    command: ClassVar[bool] = True
    # The stage needs a disk from an earlier stage (builder/manifest_check.py).
    needs: ClassVar[tuple[str, ...]] = ("disk",)
    # The disk's size is a multiple of this (a cloud that sizes disks in whole GiB takes no other).
    size_alignment: ClassVar[int] = MiB
    # The target writes an ISO: the blueprint's [customizations.iso] applies to it (refused without one).
    uses_iso_metadata: ClassVar[bool] = False

    def __init_subclass__(cls, /, name: str | None = None, **kwargs: Any) -> None:
        if name is None:
            super().__init_subclass__(**kwargs)
            return
        module_file = sys.modules[cls.__module__].__file__
        assert module_file is not None
        super().__init_subclass__(
            kind=f"target.{name}", schema=Path(module_file).with_suffix(".json"), **kwargs
        )
        if name in _TARGETS:
            raise TypeError(f"target {name} registered twice")
        cls.name = name
        _TARGETS[name] = cls

    @classmethod
    def stage_options(cls, plan: TargetPlan) -> dict[str, Any]:
        """The options the planner writes for this target's stage (validated against the schema)."""
        return {"filename": cls.filename, "platform": plan.platform.value}

    @classmethod
    def check_image(cls, repo: Path, commit: str) -> None:
        """Refuse an image this target cannot make an output of (run by `imgbuild plan/FORMAT/build --type`
        right after the import, and as the stage's preflight for `imgbuild build MANIFEST`)."""

    def write(self, disk: Path, dest: Path, options: Mapping[str, Any], scratch: Path) -> None:
        """Write the output `dest` from the raw `disk` (read only); `scratch` is an empty directory."""
        raise NotImplementedError

    def check(self, dest: Path, disk: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check the written output with the tool that consumes it; return what result.json records."""
        raise NotImplementedError

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        disk = ctx.require_disk()
        filename = options["filename"]
        if any(o.filename == filename for o in ctx.outputs):
            raise ManifestError(
                f"two outputs of the manifest are named {filename}",
                hint="give each target stage its own filename",
            )
        outputs = ctx.workdir / "outputs"
        outputs.mkdir(exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"scratch-{self.name}-", dir=ctx.workdir))
        dest = outputs / filename
        try:
            self.write(disk, dest, options, scratch)
        finally:
            shutil.rmtree(scratch)  # intermediate files (the ova's vmdk) need not wait for the build's end
        record = self.check(dest, disk, options)
        meta = {"target": self.name, "platform": options["platform"], "arch": ctx.arch}
        ctx.outputs.append(Output(dest, self.format, filename, {**meta, **record}))


def register_all() -> dict[str, type[Target]]:
    return dict(_TARGETS)
