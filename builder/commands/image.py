"""`imgbuild plan FORMAT REF`, `imgbuild build MANIFEST`, and `imgbuild FORMAT REF` (plan, then build)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builder import manifest as manifest_mod
from builder import run
from builder.arch import Arch
from builder.blueprint import Blueprint, load_blueprint, parse_size
from builder.commands import trust_args
from builder.customize.image_view import check_against_image
from builder.errors import ImgbuildError, NeedsRoot
from builder.paths import cache_dir
from builder.plan import PlanOptions, Rootfs, plan
from builder.prepare import prepare, remember_import
from builder.progress import Progress, ProgressMode
from builder.runner import build
from targets.formats import DISK_FORMATS, Format


def _size(text: str) -> int:
    try:
        return parse_size(int(text) if text.isdigit() else text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "reference", metavar="REF", help="the container image (registry, oci:, oci-archive:, ...)"
    )
    parser.add_argument(
        "--blueprint", metavar="FILE", help="Image Builder blueprint (TOML, JSON, YAML; - for stdin)"
    )
    parser.add_argument("--arch", type=Arch.parse, help="x86_64 or aarch64 (default: the image's)")
    parser.add_argument("--rootfs", type=Rootfs, choices=list(Rootfs), default=Rootfs.EXT4)
    parser.add_argument("--size", type=_size, help="disk size, e.g. 10GiB (grown if the layout needs more)")
    parser.add_argument("--seed", help="seed for UUIDs (default: derived from the inputs)")
    parser.add_argument("--compress", action="store_true", help="compress qcow2 output")
    trust_args.add_arguments(parser, install=True)


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", type=Path, default=Path("output"), metavar="DIR", help="default: ./output"
    )
    parser.add_argument(
        "--progress", type=ProgressMode, choices=list(ProgressMode), default=ProgressMode.AUTO
    )


def _make_manifest(fmt: Format, args: argparse.Namespace) -> manifest_mod.Manifest:
    blueprint = load_blueprint(args.blueprint) if args.blueprint else Blueprint.empty()
    if blueprint.container_ref is not None and blueprint.container_ref != args.reference:
        raise ImgbuildError(
            f"the blueprint names the image {blueprint.container_ref!r} (container_ref), "
            f"the command line {args.reference!r}",
            hint="name the same image in both, or remove container_ref from the blueprint",
        )
    cache = cache_dir()
    ref, trust = trust_args.resolve(args)
    # Commands that build have --progress: the import (here, before planning) reports through it too.
    mode = getattr(args, "progress", None)
    progress = Progress(mode) if mode is not None else None
    prepared = prepare(ref, arch=args.arch, cache=cache, trust=trust, progress=progress)
    # What the build's ostree.customize would refuse is refused now, before any disk is partitioned.
    check_against_image(blueprint, Path(prepared.import_record["repo"]), prepared.import_record["commit"])
    options = PlanOptions(rootfs=args.rootfs, size=args.size, seed=args.seed, compression=args.compress)
    manifest = plan(prepared.facts, blueprint, fmt, options)
    remember_import(manifest, prepared, cache)
    return manifest


def _require_root() -> None:
    if not run.is_root():
        raise NeedsRoot(
            "building a disk image needs root (loop devices, mounts, ostree admin deploy)",
            hint="run imgbuild as root, e.g. with sudo",
        )


def _build(manifest: manifest_mod.Manifest, args: argparse.Namespace, *, planned_here: bool = False) -> int:
    _require_root()
    result = build(
        manifest,
        output_dir=args.output,
        cache=cache_dir(),
        progress=Progress(args.progress),
        preflight=not planned_here,  # _make_manifest made the same checks a moment ago
    )
    if args.progress is not ProgressMode.JSON:
        for output in result.outputs:
            print(args.output / output["path"])
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    manifest = _make_manifest(Format(args.format), args)
    text = manifest.dumps(
        "json" if args.output_format == "json" or str(args.o or "").endswith(".json") else "yaml"
    )
    if args.o is None or str(args.o) == "-":
        sys.stdout.write(text)
    else:
        tmp = args.o.with_name(f".{args.o.name}.tmp")
        try:
            tmp.write_text(text)
            tmp.replace(args.o)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise ImgbuildError(f"cannot write the manifest to {args.o}: {e.strerror}") from e
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    return _build(manifest_mod.load(args.manifest), args)


def cmd_image(args: argparse.Namespace) -> int:
    _require_root()
    return _build(_make_manifest(Format(args.command), args), args, planned_here=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="write the manifest for an image without building it")
    p.add_argument("format", choices=[f.value for f in DISK_FORMATS], metavar="FORMAT")
    _plan_arguments(p)
    p.add_argument(
        "-o", type=Path, metavar="FILE", help="write the manifest here (.json or .yaml; default stdout)"
    )
    p.add_argument("--output-format", choices=["yaml", "json"], default="yaml")
    p.set_defaults(func=cmd_plan)

    b = sub.add_parser("build", help="build the images a manifest describes")
    b.add_argument("manifest", type=Path, metavar="MANIFEST")
    _build_arguments(b)
    b.set_defaults(func=cmd_build)

    for fmt in DISK_FORMATS:
        f = sub.add_parser(fmt.value, help=f"build a {fmt.value} disk image from a container image")
        _plan_arguments(f)
        _build_arguments(f)
        f.set_defaults(func=cmd_image)
