"""Executes a manifest: one stage after another, cached stages restored, every resource released.

All resources of a build (work directory, loop devices, mounts) hang off one ReleaseStack, released on
success, failure, Ctrl-C and SIGTERM (turned into an exception here); a release that fails is reported beside
the error that stopped the build, never instead of it. Outputs are written in a work
directory inside the output directory and renamed to their final names only when every stage has
succeeded; `result.json` and the manifest used are written last, beside them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from builder import __version__, faults
from builder.cachedir import locks
from builder.devices import ReleaseStack
from builder.errors import ImgbuildError, StageFailed
from builder.manifest import Manifest, Stage
from builder.manifest_check import check as check_declarations
from builder.ostree.refescape import image_ref
from builder.progress import Progress
from builder.source.access import RegistryAccess
from builder.source.reference import parse_reference
from builder.stages import registry
from builder.stages.context import BuildContext
from builder.stages.records import StageRecords

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an exception so that every context manager unwinds."""


class _Interrupts:
    """SIGINT and SIGTERM while a build runs.

    While stages run, the first signal becomes an exception (KeyboardInterrupt, or Terminated for SIGTERM) so
    that every resource unwinds. From then on, and while finished outputs are published, signals are held
    back: cleanup and publishing are never cut short (no half-removed work directory, no half-written
    result). A signal held back while a successful build was publishing is raised once all is released.
    """

    def __init__(self) -> None:
        self.holding = False
        self.held: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread: whoever runs the build there handles signals
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.held = self.held or signum
            return
        self.holding = True
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def hold(self) -> None:
        self.holding = True

    def raise_held(self) -> None:
        if self.held is not None:
            raise Terminated() if self.held == signal.SIGTERM else KeyboardInterrupt()


@dataclass(frozen=True)
class BuildResult:
    outputs: tuple[dict[str, Any], ...]
    result_file: Path
    manifest_file: Path
    seconds: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def build(
    manifest: Manifest,
    *,
    output_dir: Path,
    cache: Path,
    progress: Progress,
    preflight: bool = True,
    registry: RegistryAccess | None = None,
) -> BuildResult:
    """Run `manifest`. `preflight=False` when the caller has just planned it and made the same checks
    (`imgbuild FORMAT REF`: the blueprint was checked against this image a moment ago)."""
    started = time.monotonic()
    # A manifest made in-process (plan, then build) is checked as one read from a file is, before any work.
    check_declarations(manifest.to_dict())
    for directory, what in ((output_dir, "output"), (cache, "cache")):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ImgbuildError(
                f"cannot create the {what} directory {directory}: {e.strerror}",
                hint="choose a writable directory" + (" with --output" if what == "output" else ""),
            ) from e
    stages = list(manifest.stages())
    ids = manifest.stage_ids()
    total = len(stages)
    with _Interrupts() as interrupts, ReleaseStack() as stack:
        # The image stays in use (`cache prune` keeps it) until the build ends.
        imgref = image_ref(parse_reference(manifest.source.reference).skopeo)
        stack.enter_context(locks.leased(cache, imgref, manifest.source.digest))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".imgbuild-", dir=output_dir)))
        ctx = BuildContext(
            workdir=workdir,
            cache=cache,
            stack=stack,
            progress=progress,
            source_reference=manifest.source.reference,
            source_digest=manifest.source.digest,
            arch=manifest.source.arch,
            registry=registry or RegistryAccess(),
        )
        try:
            checks = _Preflight(stages if preflight else [])
            checks.run(ctx)
            pipeline = None
            for index, ((path, stage), stage_id) in enumerate(zip(stages, ids, strict=True), start=1):
                if path.partition(".")[0] != pipeline:
                    pipeline = path.partition(".")[0]
                    ctx.start_pipeline()
                _run_stage(index, total, path, stage.type, dict(stage.options), stage_id, ctx)
                checks.made(stage.type, ctx)
            interrupts.hold()
            outputs = _finish(ctx, output_dir)
        except ImgbuildError as e:
            interrupts.hold()
            progress.failed(e.message)
            raise
        except BaseException as e:
            interrupts.hold()
            progress.failed("interrupted" if isinstance(e, KeyboardInterrupt) else f"internal error: {e!r}")
            raise
        manifest_file = output_dir / "manifest.json"
        _write_atomic(manifest_file, manifest.dumps("json"))
        result = {
            "imgbuild": __version__,
            "source": {
                "reference": manifest.source.reference,
                "digest": manifest.source.digest,
                "arch": manifest.source.arch,
            },
            "commit": ctx.commit,
            "manifest": manifest_file.name,
            "outputs": list(outputs),
            "seconds": round(time.monotonic() - started, 3),
        }
        result_file = output_dir / "result.json"
        _write_atomic(result_file, json.dumps(result, indent=2) + "\n")
    interrupts.raise_held()
    progress.finished(result)
    return BuildResult(tuple(outputs), result_file, manifest_file, time.monotonic() - started)


class _Preflight:
    """Each stage's preflight, run once the facts it needs exist (see StageKind.preflight_needs)."""

    def __init__(self, stages: list[tuple[str, Stage]]) -> None:
        self.total = len(stages)
        self.facts: set[str] = set()
        self.waiting = [
            (index, path, stage)
            for index, (path, stage) in enumerate(stages, start=1)
            if _kind(stage.type).preflight_needs
        ]

    def made(self, kind_name: str, ctx: BuildContext) -> None:
        self.facts.update(_kind(kind_name).makes)
        self.run(ctx)

    def run(self, ctx: BuildContext) -> None:
        for entry in list(self.waiting):
            index, path, stage = entry
            kind = _kind(stage.type)
            if not set(kind.preflight_needs) <= self.facts:
                continue
            self.waiting.remove(entry)
            try:
                kind.preflight(dict(stage.options), ctx)
            except ImgbuildError as e:
                e.message = f"stage {index}/{self.total} {stage.type} ({path}) refused: {e.message}"
                raise


def _kind(name: str) -> type[registry.StageKind]:
    kind = registry.get(name)
    if kind is None:  # manifest_check refuses such a manifest before the build starts
        raise StageFailed(f"unknown stage type {name!r}")
    return kind


def _run_stage(
    index: int,
    total: int,
    path: str,
    kind_name: str,
    options: dict[str, Any],
    stage_id: str,
    ctx: BuildContext,
) -> None:
    kind = _kind(kind_name)
    stage = kind()
    ctx.progress.stage_started(index, total, kind_name, stage_id)
    t0 = time.monotonic()
    records = StageRecords(ctx.cache)
    cached = False
    try:
        faults.stage_started(index, kind_name)
        faults.pause(index, kind_name)
        if kind.cacheable:
            record, damaged = records.read(stage_id)
            if damaged is not None:
                ctx.progress.message(damaged)
            cached = record is not None and stage.restore(record, options, ctx)
        if not cached:
            record = stage.run(options, ctx)
            if kind.cacheable and record is not None:
                records.write(stage_id, record)
        faults.stage_finished(index, kind_name)
    except StageFailed as e:
        raise StageFailed(
            f"stage {index}/{total} {kind_name} ({path}) failed: {e.message}", hint=e.hint
        ) from e
    except ImgbuildError as e:
        e.message = f"stage {index}/{total} {kind_name} ({path}) failed: {e.message}"
        raise
    ctx.progress.stage_finished(index, total, kind_name, time.monotonic() - t0, cached)


def _finish(ctx: BuildContext, output_dir: Path) -> list[dict[str, Any]]:
    """Rename every output to its final name; only now do they appear in the output directory."""
    records = []
    for output in ctx.outputs:
        final = output_dir / output.filename
        output.path.replace(final)
        records.append(
            {
                "path": final.name,
                "format": output.format,
                "size": final.stat().st_size,
                "sha256": _sha256(final),
                **output.record,
            }
        )
    return records
