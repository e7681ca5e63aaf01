"""`imgbuild plan`, `imgbuild build`, and `imgbuild TARGET REF` (plan, then build), one command per target.

`imgbuild build MANIFEST` runs a manifest; `imgbuild build --type qcow2 --type vmdk REF` plans every output
type for the container image REF and builds them in one run. --type says which: without it the argument
must be a manifest file, with it a container reference; each mistake is named (a reference without --type,
a manifest file with --type) rather than guessed around.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import targets
from builder import manifest as manifest_mod
from builder import run
from builder.arch import Arch
from builder.blueprint import Blueprint, load_blueprint
from builder.commands import options, trust_args
from builder.customize.image_view import check_against_image
from builder.errors import ImgbuildError, NeedsRoot
from builder.origin import deployment_origin
from builder.plan import PlanOptions, Rootfs, plan
from builder.prepare import prepare, remember_import
from builder.progress import Progress, ProgressMode
from builder.runner import BuildResult, build
from builder.source.reference import EXAMPLE, Transport, parse_reference
from builder.upload import settings as aws_settings
from targets.platforms import Platform, parse_platform

# The planning options, with the defaults applied when they are not given (None: not given, so that
# `imgbuild build MANIFEST` can refuse them).
_PLAN_OPTIONS = (
    "blueprint",
    "arch",
    "rootfs",
    "size",
    "seed",
    "compress",
    "platform",
    "target_imgref",
    "secure_boot",
)


def _type(text: str) -> str:
    name = text.strip().lower()
    targets.get(name)  # an unknown type is one line and a hint
    return name


# bootc-image-builder's options that have no meaning here: named with the reason, not `unrecognized`.
_BIB_ONLY = {
    "--use-librepo": options.Refusal(
        "--use-librepo chooses how bootc-image-builder downloads packages; imgbuild installs none",
        hint="leave out --use-librepo: the image is deployed as it is",
    ),
    "--store": options.Refusal(
        "--store is bootc-image-builder's osbuild store; imgbuild keeps its cache elsewhere",
        hint="leave out --store, or pass --cache DIR",
    ),
    "--rpmmd": options.Refusal(
        "--rpmmd is bootc-image-builder's package metadata cache; imgbuild reads no package metadata",
        hint="leave out --rpmmd",
    ),
    "--log-level": options.Refusal(
        "--log-level is bootc-image-builder's", hint="use -v (info) or --debug before the command"
    ),
    "--in-vm": options.Refusal(
        "imgbuild needs no VM to build: it runs as root on this machine", hint="leave out --in-vm"
    ),
    "--build-container": options.Refusal(
        "imgbuild runs no build container: the image is deployed with this machine's ostree",
        hint="leave out --build-container",
    ),
}


def _plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blueprint",
        "--config",
        metavar="FILE",
        help="Image Builder blueprint (TOML, JSON, YAML; - for stdin); --config: bootc-image-builder's name",
    )
    parser.add_argument(
        "--arch",
        "--target-arch",
        type=Arch.parse,
        metavar="ARCH",
        help="x86_64 (amd64) or aarch64 (arm64); default: the image's (--target-arch: bootc-image-builder's)",
    )
    parser.add_argument(
        "--rootfs",
        type=options.enum_choice("root filesystem", Rootfs),
        metavar=options.metavar(Rootfs),
        help="the root filesystem (default ext4)",
    )
    parser.add_argument(
        "--size",
        type=options.size,
        help="disk size, e.g. 10G, 10GiB, 512M (default: fits the content; grown if too small)",
    )
    parser.add_argument("--seed", help="seed for UUIDs (default: derived from the inputs)")
    parser.add_argument("--compress", action="store_true", default=None, help="compress qcow2 output")
    parser.add_argument(
        "--platform",
        type=parse_platform,
        metavar="PLATFORM",
        help=f"where the image runs ({', '.join(p.value for p in Platform)}); default: each target's own",
    )
    parser.add_argument(
        "--target-imgref",
        metavar="REF",
        help="what the booted system updates from (its deployment's origin); default: REF itself, "
        "which for oci:, oci-archive:, docker-archive: and containers-storage: is this machine's copy",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="read REF from containers-storage (where podman build leaves it), as bootc-image-builder "
        "--local does; the booted system updates from REF in its registry",
    )
    parser.add_argument(
        "--secure-boot",
        type=options.choice("Secure Boot mode", ("auto", "require")),
        metavar="{auto,require}",
        default=None,
        help="require: refuse (exit 2, nothing written) an image whose boot chain cannot boot with Secure "
        "Boot enforced (signed shim, GRUB and kernel); auto (default): install the chain the image has",
    )
    for option, refusal in _BIB_ONLY.items():
        parser.add_argument(option, action=options.Refused, help=argparse.SUPPRESS, refusal=refusal)
    trust_args.add_arguments(parser, install=True)
    options.registry_arguments(parser)


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


def progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        type=options.enum_choice("progress mode", ProgressMode),
        metavar=options.metavar(ProgressMode),
        default=ProgressMode.AUTO,
        help="auto: a bar on a terminal, else plain lines; json: one event per line on stdout",
    )


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("output"),
        metavar="DIR",
        help="the directory the outputs, manifest.json and result.json are written into (default: ./output)",
    )
    parser.add_argument(
        "--chown",
        type=options.owner,
        metavar="UID:GID",
        help="give every file and directory the build writes under --output to this user and group",
    )
    progress_argument(parser)


def _source(reference: str, args: argparse.Namespace) -> tuple[str, str | None]:
    """The reference to read and the --target-imgref, with bootc-image-builder's --local applied."""
    target: str | None = args.target_imgref
    if not getattr(args, "local", False):
        return reference, target
    ref = parse_reference(reference)
    if ref.transport is not Transport.REGISTRY:
        raise ImgbuildError(
            f"--local reads a registry name from containers-storage, and {reference} names a transport",
            hint=f"leave out --local, or write the image's registry name ({EXAMPLE})",
        )
    return f"containers-storage:{ref}", target or str(ref)


def _make_manifest(types: list[str], reference: str, args: argparse.Namespace) -> manifest_mod.Manifest:
    blueprint = load_blueprint(args.blueprint) if args.blueprint else Blueprint.empty()
    if blueprint.container_ref is not None and blueprint.container_ref != reference:
        raise ImgbuildError(
            f"the blueprint names the image {blueprint.container_ref!r} (container_ref), "
            f"the command line {reference!r}",
            hint="name the same image in both, or remove container_ref from the blueprint",
        )
    reference, target_imgref = _source(reference, args)
    cache = options.cache_root(args)
    ref, trust = trust_args.resolve(argparse.Namespace(**{**vars(args), "reference": reference}))
    origin = deployment_origin(ref, target_imgref)  # a bad --target-imgref is refused before any fetch
    # Commands that build have --progress: the import (here, before planning) reports through it too;
    # `plan` reports on stderr as a terminal or plain lines (its stdout may be the manifest).
    progress = Progress(getattr(args, "progress", None) or ProgressMode.AUTO)
    prepared = prepare(
        ref, arch=args.arch, cache=cache, trust=trust, progress=progress, registry=options.registry(args)
    )
    prepared = dataclasses.replace(
        prepared, facts=dataclasses.replace(prepared.facts, origin=origin.reference)
    )
    # What the build's ostree.customize would refuse is refused now, before any disk is partitioned.
    check_against_image(blueprint, Path(prepared.import_record["repo"]), prepared.import_record["commit"])
    # And what a target's own preflight would refuse (the live ISO's initramfs), for the same reason.
    for name in dict.fromkeys(types):
        targets.get(name).check_image(Path(prepared.import_record["repo"]), prepared.import_record["commit"])
    plan_options = PlanOptions(
        rootfs=args.rootfs or Rootfs.EXT4,
        size=args.size,
        seed=args.seed,
        compression=bool(args.compress),
        platform=args.platform,
        secure_boot=args.secure_boot == "require",
    )
    manifest = plan(prepared.facts, blueprint, types, plan_options)
    remember_import(manifest, prepared, cache)
    if origin.warning is not None:  # once planned: a refusal before would make it noise beside the error
        print(f"imgbuild: warning: {origin.warning}", file=sys.stderr)
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
        cache=options.cache_root(args),
        progress=Progress(args.progress),
        preflight=not planned_here,  # _make_manifest made the same checks a moment ago
        registry=options.registry(args),
    )
    give_outputs(args, result)
    if args.progress is not ProgressMode.JSON:
        for output in result.outputs:
            print(args.output / output["path"])
    return 0


def give_outputs(args: argparse.Namespace, result: BuildResult) -> None:
    """--chown: what the build wrote under --output, once nothing more is written there."""
    if args.chown is not None:
        written = [str(o["path"]) for o in result.outputs] + [
            path.name for path in (result.result_file, result.manifest_file)
        ]
        options.chown_written(args.output, written, args.chown)


def _before_fetching(args: argparse.Namespace) -> None:
    """What is checked before any image is fetched: a usable --output, and root."""
    options.check_output_dir(args.output)
    _require_root()


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
    if args.o is not None and str(args.o) != "-":
        options.check_output_file(args.o)  # before the fetch, as --output is
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
        stages = len(list(manifest.stages()))
        print(
            f"imgbuild: wrote the manifest to {args.o} ({', '.join(types)}: {stages} stages); "
            f"build it with: imgbuild build {args.o}",
            file=sys.stderr,
        )
    return 0


def _manifest_file(source: str) -> Path:
    """`imgbuild build MANIFEST`'s file; a container reference given without --type is named as such."""
    path = Path(source)
    if path.is_file():
        return path
    try:
        parse_reference(source)
    except ImgbuildError:
        if path.exists():
            raise ImgbuildError(
                f"{source} is not a manifest file", hint="imgbuild plan -o FILE writes one"
            ) from None
        raise ImgbuildError(
            f"no manifest file {source}",
            hint="imgbuild build MANIFEST runs a file imgbuild plan wrote; "
            "imgbuild build --type qcow2 REF builds an image",
        ) from None
    raise ImgbuildError(
        f"{source} is a container reference: say which outputs to build with --type",
        hint=f"imgbuild build --type qcow2 {source} (or imgbuild qcow2 {source})",
    )


def _refuse_manifest_as_reference(source: str) -> None:
    """With --type the argument is a container reference; a manifest file there is a mix-up, named."""
    path = Path(source)
    if path.is_file() and path.suffix in (".json", ".yaml", ".yml"):
        try:
            manifest_mod.load(path)
        except ImgbuildError:
            return  # not a manifest: parse_reference will say what it is
        raise ImgbuildError(
            f"{source} is a manifest: --type plans a container image, and a manifest is already planned",
            hint=f"imgbuild build {source} (without --type)",
        )


def cmd_build(args: argparse.Namespace) -> int:
    if args.types:
        _refuse_manifest_as_reference(args.source)
        _before_fetching(args)
        if aws_settings.requested(args):
            from builder.commands.upload import build_and_upload  # it builds on this module

            return build_and_upload(args.types, args.source, args)
        return _build(_make_manifest(args.types, args.source, args), args, planned_here=True)
    if aws_settings.requested(args):
        raise ImgbuildError(
            "the --aws-* options upload what `imgbuild build --type ami REF` builds",
            hint="for a disk built earlier: imgbuild upload aws DISK --aws-region R --aws-ami-name NAME",
        )
    given = [f"--{name.replace('_', '-')}" for name in _PLAN_OPTIONS if getattr(args, name) is not None]
    if args.local:
        given.append("--local")
    if given:
        raise ImgbuildError(
            f"{', '.join(given)} plan an image: they need --type (a manifest is already planned)",
            hint="imgbuild build --type qcow2 REF ..., or imgbuild build MANIFEST",
        )
    manifest = manifest_mod.load(_manifest_file(args.source))
    _before_fetching(args)
    return _build(manifest, args)


def cmd_image(args: argparse.Namespace) -> int:
    _before_fetching(args)
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
    p.add_argument(
        "--output-format",
        type=options.choice("manifest format", ("yaml", "json")),
        metavar="{yaml,json}",
        default="yaml",
        help="the manifest's format (default: yaml, or json when -o ends in .json)",
    )
    p.set_defaults(func=cmd_plan)

    b = sub.add_parser(
        "build",
        help="build the images a manifest describes, or several output types of a container image (--type)",
        description="imgbuild build MANIFEST runs a manifest `imgbuild plan -o FILE` wrote. imgbuild build "
        "--type TYPE [--type TYPE ...] REF plans and builds those outputs of the container image REF in one "
        "run (bootc-image-builder's form). --type decides which: without it the argument must be a "
        "manifest file.",
    )
    b.add_argument(
        "source",
        metavar="MANIFEST|REF",
        help="a manifest file (written by imgbuild plan); with --type, a container reference instead",
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
