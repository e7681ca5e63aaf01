"""`imgbuild plan`, `imgbuild build`, and `imgbuild TARGET REF` (plan, then build), one command per target.

`imgbuild build MANIFEST` runs a manifest; `imgbuild build --type qcow2 --type vmdk REF` plans every output
type for the container image REF and builds them in one run. The two are told apart by --type alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import targets
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
from builder.upload import settings as aws_settings
from targets.platforms import Platform, parse_platform

# The planning options, with the defaults applied when they are not given (None: not given, so that
# `imgbuild build MANIFEST` can refuse them).
_PLAN_OPTIONS = ("blueprint", "arch", "rootfs", "size", "seed", "compress", "platform")


def _size(text: str) -> int:
    try:
        return parse_size(int(text) if text.isdigit() else text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _type(text: str) -> str:
    targets.get(text)  # an unknown type is one line and a hint
    return text


def _plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blueprint", metavar="FILE", help="Image Builder blueprint (TOML, JSON, YAML; - for stdin)"
    )
    parser.add_argument("--arch", type=Arch.parse, help="x86_64 or aarch64 (default: the image's)")
    parser.add_argument("--rootfs", type=Rootfs, choices=list(Rootfs), help="ext4 (default), xfs or btrfs")
    parser.add_argument(
        "--size", type=_size, help="disk size, e.g. 10GiB (default: fits the content; grown if too small)"
    )
    parser.add_argument("--seed", help="seed for UUIDs (default: derived from the inputs)")
    parser.add_argument("--compress", action="store_true", default=None, help="compress qcow2 output")
    parser.add_argument(
        "--platform",
        type=parse_platform,
        metavar="PLATFORM",
        help=f"where the image runs ({', '.join(p.value for p in Platform)}); default: each target's own",
    )
    trust_args.add_arguments(parser, install=True)


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    """REF and the planning options (`imgbuild TYPE REF`, and `imgbuild ami REF` in commands/upload.py)."""
    parser.add_argument(
        "reference", metavar="REF", help="the container image (registry, oci:, oci-archive:, ...)"
    )
    _plan_options(parser)


def _types_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--type",
        dest="types",
        action="append",
        type=_type,
        metavar="TYPE",
        help=f"an output type ({', '.join(targets.names())}); repeat for several: {what}",
    )


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", type=Path, default=Path("output"), metavar="DIR", help="default: ./output"
    )
    parser.add_argument(
        "--progress", type=ProgressMode, choices=list(ProgressMode), default=ProgressMode.AUTO
    )


def _make_manifest(types: list[str], reference: str, args: argparse.Namespace) -> manifest_mod.Manifest:
    blueprint = load_blueprint(args.blueprint) if args.blueprint else Blueprint.empty()
    if blueprint.container_ref is not None and blueprint.container_ref != reference:
        raise ImgbuildError(
            f"the blueprint names the image {blueprint.container_ref!r} (container_ref), "
            f"the command line {reference!r}",
            hint="name the same image in both, or remove container_ref from the blueprint",
        )
    cache = cache_dir()
    ref, trust = trust_args.resolve(argparse.Namespace(**{**vars(args), "reference": reference}))
    # Commands that build have --progress: the import (here, before planning) reports through it too.
    mode = getattr(args, "progress", None)
    progress = Progress(mode) if mode is not None else None
    prepared = prepare(ref, arch=args.arch, cache=cache, trust=trust, progress=progress)
    # What the build's ostree.customize would refuse is refused now, before any disk is partitioned.
    check_against_image(blueprint, Path(prepared.import_record["repo"]), prepared.import_record["commit"])
    # And what a target's own preflight would refuse (the live ISO's initramfs), for the same reason.
    for name in dict.fromkeys(types):
        targets.get(name).check_image(Path(prepared.import_record["repo"]), prepared.import_record["commit"])
    options = PlanOptions(
        rootfs=args.rootfs or Rootfs.EXT4,
        size=args.size,
        seed=args.seed,
        compression=bool(args.compress),
        platform=args.platform,
    )
    manifest = plan(prepared.facts, blueprint, types, options)
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
    if args.types:
        if len(args.words) != 1:
            raise ImgbuildError(
                "with --type, `imgbuild plan` takes one container reference",
                hint="imgbuild plan --type qcow2 --type vmdk REF",
            )
        types, reference = args.types, args.words[0]
    else:
        if len(args.words) != 2:
            raise ImgbuildError(
                "`imgbuild plan` takes an output type and a container reference",
                hint="imgbuild plan qcow2 REF, or imgbuild plan --type qcow2 --type vmdk REF",
            )
        types, reference = [_type(args.words[0])], args.words[1]
    manifest = _make_manifest(types, reference, args)
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
    if args.types:
        _require_root()
        if aws_settings.requested(args):
            from builder.commands.upload import build_and_upload  # it builds on this module

            return build_and_upload(args.types, args.source, args)
        return _build(_make_manifest(args.types, args.source, args), args, planned_here=True)
    if aws_settings.requested(args):
        raise ImgbuildError(
            "the --aws-* options upload what `imgbuild build --type ami REF` builds",
            hint="for a disk built earlier: imgbuild upload aws DISK --aws-region R --aws-ami-name NAME",
        )
    given = [f"--{name}" for name in _PLAN_OPTIONS if getattr(args, name) is not None]
    if given:
        raise ImgbuildError(
            f"{', '.join(given)} plan an image: they need --type (a manifest is already planned)",
            hint="imgbuild build --type qcow2 REF ..., or imgbuild build MANIFEST",
        )
    return _build(manifest_mod.load(Path(args.source)), args)


def cmd_image(args: argparse.Namespace) -> int:
    _require_root()
    return _build(_make_manifest([args.command], args.reference, args), args, planned_here=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="write the manifest for one or more outputs without building them")
    p.add_argument(
        "words", nargs="+", metavar="[TYPE] REF", help="an output type and a container reference (see --type)"
    )
    _types_option(p, "with --type, REF alone")
    _plan_options(p)
    p.add_argument(
        "-o", type=Path, metavar="FILE", help="write the manifest here (.json or .yaml; default stdout)"
    )
    p.add_argument("--output-format", choices=["yaml", "json"], default="yaml")
    p.set_defaults(func=cmd_plan)

    b = sub.add_parser(
        "build",
        help="build the images a manifest describes, or several output types of a container image (--type)",
    )
    b.add_argument(
        "source", metavar="MANIFEST|REF", help="a manifest; with --type, a container reference instead"
    )
    _types_option(b, "plan them all for REF and build them in one run, sharing deployments")
    _plan_options(b)
    _build_arguments(b)
    aws_settings.add_arguments(b, required=False)
    b.set_defaults(func=cmd_build)

    for name, target in targets.all_targets().items():
        if not target.command:
            continue  # another command module offers `imgbuild NAME REF` (see Target.command)
        f = sub.add_parser(name, help=f"build {target.help}")
        _plan_arguments(f)
        _build_arguments(f)
        f.set_defaults(func=cmd_image)
