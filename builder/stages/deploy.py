"""ostree.deploy, ostree.customize, ostree.selinux: the sysroot, written straight into the target filesystems.

Deploying into the mounted partitions writes the content once (no tree copied into an image afterwards).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from builder.blueprint import Blueprint, parse_blueprint
from builder.customize import apply as apply_customizations
from builder.customize.image_view import check_against_image
from builder.ostree.deploy import (
    Deployment,
    MountSpec,
    deploy,
    find_deployment,
    init_sysroot,
    pull_commit,
    seed_var,
    selinux_label,
    write_mounts,
    write_swaps,
)
from builder.ostree.remotes import install_files
from builder.stages.context import BuildContext
from builder.stages.registry import StageKind
from builder.stages.sysroot import mount_problems, mounted_sysroot


def _blueprint(options: Mapping[str, Any]) -> Blueprint:
    return parse_blueprint(json.dumps(options["blueprint"]), "json", "manifest blueprint")


def _deployment(root: Path, options: Mapping[str, Any], ctx: BuildContext) -> Deployment:
    _, commit = ctx.require_commit()
    return find_deployment(root, stateroot=options["stateroot"], commit=commit)


class Deploy(StageKind, kind="ostree.deploy"):
    needs = ("commit", "disk")
    makes = ("deployment",)
    refers: ClassVar[Mapping[str, str]] = {"mounts[].partition": "filesystem"}

    @classmethod
    def problems(cls, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        return mount_problems(options["mounts"])

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        repo, commit = ctx.require_commit()
        with mounted_sysroot(ctx, options["mounts"]) as root:
            init_sysroot(root, stateroot=options["stateroot"], readonly=options["readonly"])
            pull_commit(repo, root, commit, refs=ctx.image_refs)
            deployment = deploy(
                root,
                stateroot=options["stateroot"],
                commit=commit,
                kargs=options["kernel_args"],
                origin_ref=options["origin"],
                source_digest=ctx.source_digest,
            )
            seed_var(deployment)
            units = [MountSpec(m["where"], m["uuid"], m["fstype"], m["options"]) for m in options["fstab"]]
            write_mounts(deployment, units, style=options["mount_style"])
            write_swaps(deployment, options["swap"])
            if "install_remote" in options:  # so that the booted system verifies its updates the same way
                files = {p: base64.b64decode(d) for p, d in options["install_remote"]["files"].items()}
                install_files(deployment.etc, files)
                ctx.progress.message(f"installed ostree remote {options['install_remote']['name']}")
            ctx.deployment = str(deployment.path.relative_to(root))


class Customize(StageKind, kind="ostree.customize"):
    """The blueprint's customizations, written into the deployment's /etc, the stateroot's /var and /boot."""

    needs = ("commit", "disk", "deployment")
    preflight_needs = ("commit",)

    @classmethod
    def preflight(cls, options: Mapping[str, Any], ctx: BuildContext) -> None:
        """The blueprint against the imported image, before anything is partitioned (as `plan` does)."""
        repo, commit = ctx.require_commit()
        check_against_image(_blueprint(options), repo, commit)

    refers: ClassVar[Mapping[str, str]] = {"mounts[].partition": "filesystem"}

    @classmethod
    def problems(cls, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        return mount_problems(options["mounts"])

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        blueprint = _blueprint(options)
        with mounted_sysroot(ctx, options["mounts"]) as root:
            deployment = _deployment(root, options, ctx)
            for line in apply_customizations(
                blueprint, deploy_root=deployment.path, var_root=deployment.var, boot_root=root / "boot"
            ):
                ctx.progress.message(line)


class Selinux(StageKind, kind="ostree.selinux"):
    """Label what the build created outside the commit with the image's own file_contexts."""

    needs = ("commit", "disk", "deployment")
    refers: ClassVar[Mapping[str, str]] = {"mounts[].partition": "filesystem"}

    @classmethod
    def problems(cls, options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        return mount_problems(options["mounts"])

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        with mounted_sysroot(ctx, options["mounts"]) as root:
            deployment = _deployment(root, options, ctx)
            paths = [deployment.path / "etc", deployment.var, root / "boot"]
            count = selinux_label(root, deployment, paths)
            ctx.progress.message(f"labelled {count} files with the image's SELinux policy")
