"""ostree.deploy, ostree.customize, ostree.selinux: the sysroot, written straight into the target filesystems.

Deploying into the mounted partitions writes the content once (no tree copied into an image afterwards).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder.blueprint import parse_blueprint
from builder.customize import apply as apply_customizations
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
from builder.stages.sysroot import mounted_sysroot


def _deployment(root: Path, options: Mapping[str, Any], ctx: BuildContext) -> Deployment:
    assert ctx.commit is not None, "ostree stages follow container.import"
    return find_deployment(root, stateroot=options["stateroot"], commit=ctx.commit)


class Deploy(StageKind, kind="ostree.deploy"):
    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        assert ctx.repo is not None and ctx.commit is not None, "ostree.deploy follows container.import"
        with mounted_sysroot(ctx, options["mounts"]) as root:
            init_sysroot(root, stateroot=options["stateroot"], readonly=options["readonly"])
            pull_commit(ctx.repo, root, ctx.commit, refs=ctx.image_refs)
            deployment = deploy(
                root,
                stateroot=options["stateroot"],
                commit=ctx.commit,
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

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        blueprint = parse_blueprint(json.dumps(options["blueprint"]), "json", "manifest blueprint")
        with mounted_sysroot(ctx, options["mounts"]) as root:
            deployment = _deployment(root, options, ctx)
            for line in apply_customizations(
                blueprint, deploy_root=deployment.path, var_root=deployment.var, boot_root=root / "boot"
            ):
                ctx.progress.message(line)


class Selinux(StageKind, kind="ostree.selinux"):
    """Label what the build created outside the commit with the image's own file_contexts."""

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> None:
        with mounted_sysroot(ctx, options["mounts"]) as root:
            deployment = _deployment(root, options, ctx)
            paths = [deployment.path / "etc", deployment.var, root / "boot"]
            count = selinux_label(root, deployment, paths)
            ctx.progress.message(f"labelled {count} files with the image's SELinux policy")
