"""`imgbuild blueprint check|show FILE`: validate a blueprint without building, or print it normalised.

`check --image REF` also checks it against that image (fetched and imported into the cache, as `plan` does):
units, accounts, time zone and paths the image does not have are refused as `plan` and the build refuse them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from builder.arch import Arch
from builder.blueprint import dump_toml, load_blueprint
from builder.commands import options
from builder.customize import describe
from builder.customize.image_view import check_against_image
from builder.plan import PlanOptions, Rootfs, check_blueprint
from builder.prepare import prepare
from builder.source.reference import parse_reference

FORMAT_CHOICES = ("toml", "json", "yaml")


def check(args: argparse.Namespace) -> int:
    bp = load_blueprint(args.file, args.format)
    name = bp.name or "(unnamed)"
    plan_options = PlanOptions(rootfs=args.rootfs or Rootfs.EXT4)
    # The layout's checks first: they need no image, and refuse as plan would.
    check_blueprint(bp, plan_options, None, args.arch or Arch.host())
    if args.image is not None:
        prepared = prepare(
            parse_reference(args.image),
            arch=args.arch,
            cache=options.cache_root(args),
            registry=options.registry(args),
        )
        record = prepared.import_record
        check_blueprint(bp, plan_options, prepared.facts, prepared.facts.arch)
        check_against_image(bp, Path(record["repo"]), record["commit"])
    against = f" for {args.image}" if args.image is not None else ""
    print(f"blueprint {name} {bp.version}: valid{against}")
    for line in describe(bp):
        print(f"  {line}")
    arguments = bp.kernel_arguments()
    print(f"kernel arguments: {' '.join(arguments) if arguments else '(none)'}")
    return 0


def show(args: argparse.Namespace) -> int:
    bp = load_blueprint(args.file, args.format)
    if args.output_format == "json":
        print(json.dumps(bp.to_dict(), indent=2, sort_keys=True))
    else:
        print(dump_toml(bp), end="")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("blueprint", help="check or show an Image Builder-style blueprint")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, func, text in (
        ("check", check, "validate a blueprint and print what it will apply"),
        ("show", show, "print the blueprint normalised (sizes in bytes, defaults filled in)"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("file", metavar="FILE", help="the blueprint (.toml, .json, .yaml; - for stdin)")
        action.add_argument(
            "--format",
            type=options.choice("blueprint format", FORMAT_CHOICES),
            metavar=options.metavar(FORMAT_CHOICES),
            help="the blueprint's format (default: from FILE's name)",
        )
        if name == "check":
            action.add_argument(
                "--image", metavar="REF", help="also check it against this container image, as plan does"
            )
            action.add_argument(
                "--arch",
                "--target-arch",
                type=Arch.parse,
                metavar="ARCH",
                help="the image's architecture (with --image)",
            )
            action.add_argument(
                "--rootfs",
                type=options.enum_choice("root filesystem", Rootfs),
                metavar=options.metavar(Rootfs),
                help="the root filesystem plan will be given (default ext4): some layouts depend on it",
            )
            options.registry_arguments(action)
        if name == "show":
            action.add_argument(
                "--output-format",
                type=options.choice("output format", ("toml", "json")),
                metavar="{toml,json}",
                default="toml",
                help="print it as TOML (default) or JSON",
            )
        action.set_defaults(func=func)
