"""`imgbuild blueprint check|show FILE`: validate a blueprint without building, or print it normalised."""

from __future__ import annotations

import argparse
import json

from builder.blueprint import dump_toml, load_blueprint
from builder.customize import describe

FORMAT_CHOICES = ("toml", "json", "yaml")


def check(args: argparse.Namespace) -> int:
    bp = load_blueprint(args.file, args.format)
    name = bp.name or "(unnamed)"
    print(f"blueprint {name} {bp.version}: valid")
    for line in describe(bp):
        print(f"  {line}")
    arguments = bp.kernel_arguments()
    print(f"kernel arguments: {' '.join(arguments) if arguments else '(none)'}")
    return 0


def show(args: argparse.Namespace) -> int:
    bp = load_blueprint(args.file, args.format)
    if args.output == "json":
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
            "--format", choices=FORMAT_CHOICES, help="the blueprint's format (default: from FILE)"
        )
        if name == "show":
            action.add_argument("--output", choices=("toml", "json"), default="toml", help="output format")
        action.set_defaults(func=func)
