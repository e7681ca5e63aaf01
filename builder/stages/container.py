"""container.import: fetch the image into the blob cache and import it into the cache's ostree repository.

Cacheable: its id covers the image digest, so an unchanged image is not imported again; the record holds the
merge commit, and is only trusted while the repository still has that commit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from builder.arch import Arch
from builder.cachedir import locks
from builder.errors import VerificationError
from builder.ostree.importer import import_image
from builder.ostree.repoquery import has_commit
from builder.source.fetch import fetch_image
from builder.source.reference import Reference, parse_reference
from builder.source.trust import Trust
from builder.stages.context import BuildContext
from builder.stages.registry import StageKind


class ContainerImport(StageKind, kind="container.import"):
    cacheable = True
    makes = ("commit",)
    source_options: ClassVar[Mapping[str, str]] = {
        "reference": "reference",
        "digest": "digest",
        "arch": "arch",
    }

    def run(self, options: Mapping[str, Any], ctx: BuildContext) -> Mapping[str, Any]:
        ref = parse_reference(options["reference"])
        trust = Trust.from_import_options(options)
        # What the fetch and the import write is no ref's until the import ends: `cache prune` waits. The
        # runner's lease keeps the image once imported.
        with locks.writing(ctx.cache):
            return self._run(ref, trust, options, ctx)

    def _run(
        self, ref: Reference, trust: Trust, options: Mapping[str, Any], ctx: BuildContext
    ) -> Mapping[str, Any]:
        t0 = time.monotonic()
        image = fetch_image(
            ref,
            arch=Arch.parse(options["arch"]),
            cache=ctx.cache / "oci",
            policy=trust.policy,
            authfile=ctx.registry.authfile,
            tls_verify=ctx.registry.tls_verify,
            on_bytes=lambda done, total: ctx.progress.bytes_done("fetch", done, total),
        )
        ctx.progress.phase_finished("fetch", time.monotonic() - t0)
        if image.manifest_digest != options["digest"]:
            raise VerificationError(
                f"{ref} now resolves to {image.manifest_digest}, but the manifest was planned for "
                f"{options['digest']}",
                hint="plan again (`imgbuild plan`) or pin the reference by digest",
            )
        repo = ctx.cache / "repo"
        shown = ref.with_remote(trust.remote.name).origin if trust.remote is not None else ref.origin

        def on_bytes(done: int, total: int) -> None:
            ctx.progress.bytes_done("import", done, total)

        result = import_image(
            image, repo, imgref=ref.skopeo, remote=trust.remote, shown=shown, on_bytes=on_bytes
        )
        for phase, seconds in result.phases:
            ctx.progress.phase_finished(f"import: {phase}", seconds)
        ctx.progress.message(
            f"imported {ref}: commit {result.merge_commit[:12]} "
            f"({len(result.imported_layers)} layers imported, {len(result.reused_layers)} reused)"
        )
        ctx.repo, ctx.commit, ctx.image_refs = repo, result.merge_commit, (result.image_ref,)
        return {"repo": str(repo), "commit": result.merge_commit, "image_ref": result.image_ref}

    def restore(self, record: Mapping[str, Any], options: Mapping[str, Any], ctx: BuildContext) -> bool:
        repo = ctx.cache / "repo"
        commit, image_ref = record.get("commit"), record.get("image_ref")
        # A record from elsewhere, or not of this shape, or whose commit is gone: import again.
        if str(repo) != record.get("repo") or not isinstance(commit, str) or not isinstance(image_ref, str):
            return False
        if not has_commit(repo, commit):
            return False
        ctx.repo, ctx.commit, ctx.image_refs = repo, commit, (image_ref,)
        locks.mark_used(ctx.cache, image_ref)
        return True
