"""From a reference and a blueprint to the planner's inputs: fetch, import (cached), read the image's facts.

The import happens here, before planning, because the plan depends on what the image carries (GRUB modules,
EFI binaries, SELinux policy, composefs); the import is content-addressed, so the build's container.import
stage finds it in the cache.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from builder.arch import Arch
from builder.cachedir import locks
from builder.errors import ArchMismatch
from builder.facts import ImageFacts, gather
from builder.manifest import Manifest, Stage
from builder.ostree.importer import ImportResult, import_image
from builder.progress import Progress
from builder.source.access import RegistryAccess
from builder.source.fetch import fetch_image
from builder.source.image import Image
from builder.source.inspect import require_bootable
from builder.source.reference import Reference
from builder.source.trust import Trust
from builder.stages.records import StageRecords


@dataclass(frozen=True)
class Prepared:
    facts: ImageFacts
    import_record: dict[str, str]


def prepare(
    ref: Reference,
    *,
    arch: Arch | None,
    cache: Path,
    trust: Trust | None = None,
    progress: Progress | None = None,
    registry: RegistryAccess | None = None,
) -> Prepared:
    """Fetch and import `ref` as builder.commands.trust_args resolved it (its signed form when an ostree
    remote verifies it); `progress`, if given, hears the phases' times and the import's bytes."""
    trust = trust or Trust()
    # Until the lease is taken, what this writes is no ref's and no lease's: `cache prune` must wait.
    with locks.writing(cache):
        image, result = _fetch_and_import(ref, arch, cache, trust, progress, registry or RegistryAccess())
        # The image stays in use until this process ends: the build that follows the plan deploys it.
        locks.take(cache, result.image_ref, image.manifest_digest)
    repo = cache / "repo"
    facts = gather(image, reference=ref.skopeo, origin=ref.origin, repo=repo, commit=result.merge_commit)
    facts = dataclasses.replace(
        facts, import_options=trust.import_options(), deploy_options=trust.deploy_options()
    )
    record = {"repo": str(repo), "commit": result.merge_commit, "image_ref": result.image_ref}
    return Prepared(facts, record)


def _fetch_and_import(
    ref: Reference,
    arch: Arch | None,
    cache: Path,
    trust: Trust,
    progress: Progress | None,
    registry: RegistryAccess,
) -> tuple[Image, ImportResult]:
    t0 = time.monotonic()
    fetched = (
        (lambda done, total: progress.bytes_done("fetch", done, total)) if progress is not None else None
    )
    image = fetch_image(
        ref,
        arch=arch,
        cache=cache / "oci",
        policy=trust.policy,
        authfile=registry.authfile,
        tls_verify=registry.tls_verify,
        on_bytes=fetched,
    )
    if progress is not None:
        progress.phase_finished("fetch", time.monotonic() - t0)
    if arch is not None and image.architecture is not arch:
        raise ArchMismatch(
            f"{ref} is a {image.architecture} image, but {arch} was asked for",
            hint=f"use --arch {image.architecture} or an image built for {arch}",
        )
    require_bootable(image)
    repo = cache / "repo"
    on_bytes = (
        (lambda done, total: progress.bytes_done("import", done, total)) if progress is not None else None
    )
    result = import_image(
        image, repo, imgref=ref.skopeo, remote=trust.remote, shown=ref.origin, on_bytes=on_bytes
    )
    if progress is not None:
        for phase, seconds in result.phases:
            progress.phase_finished(f"import: {phase}", seconds)
    return image, result


def remember_import(manifest: Manifest, prepared: Prepared, cache: Path) -> None:
    """Record the import made while preparing under the container.import stage's id for the build."""
    stages = [stage for _, stage in manifest.stages()]
    if stages and stages[0] == Stage(
        "container.import",
        {
            "reference": prepared.facts.reference,
            "digest": prepared.facts.digest,
            "arch": prepared.facts.arch.value,
            **prepared.facts.import_options,
        },
    ):
        StageRecords(cache).write(manifest.stage_ids()[0], prepared.import_record)
