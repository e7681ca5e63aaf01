"""`imgbuild example build`: build (or reuse) the example Debian ostree OS, one OCI archive per arch."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.arch import Arch
from builder.errors import ImgbuildError
from builder.example import RECIPE_DIR, build_example
from builder.example_secureboot import Variant, build_variant

ALL = "all"
DEFAULT_VARIANT = "default"


def _arches(text: str) -> tuple[Arch, ...]:
    if text.strip().lower() == ALL:
        return (Arch.X86_64, Arch.AARCH64)
    return (Arch.parse(text),)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "example",
        help="the example Debian 12 ostree OS (demo and tests)",
        description="Build the example Debian 12 ostree-native OS from Debian packages.",
    )
    actions = parser.add_subparsers(dest="example_command", metavar="ACTION")
    actions.required = True
    build = actions.add_parser(
        "build",
        help="build the example OCI archives (cached)",
        description="Build the example OS as ostree-native OCI archives and print one reference per line. "
        "Needs root and the Debian archive; reuses the cached build when the recipe and the archive are "
        "unchanged.",
    )
    build.add_argument(
        "--arch",
        type=_arches,
        default=(Arch.host(),),
        metavar="ARCH",
        help="x86_64, aarch64 or all (default: the host's)",
    )
    build.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="where the images go (default: .cache/examples/ in the checkout; one subdirectory per arch)",
    )
    build.add_argument(
        "--variant",
        choices=[DEFAULT_VARIANT, *(v.value for v in Variant)],
        default=DEFAULT_VARIANT,
        help="default; secureboot (Debian's signed shim and GRUB in bootupd's layout); "
        "secureboot-ostree-boot (the same in /usr/lib/ostree-boot/efi)",
    )
    build.add_argument("--force", action="store_true", help="rebuild even when the cached build is current")
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    if not RECIPE_DIR.is_dir():
        # An installed imgbuild (a wheel) does not carry the recipe: it is a development and demo feature.
        raise ImgbuildError(
            "the example OS is a checkout-only feature: its recipe (examples/debian) is not installed",
            hint="run `imgbuild example build` from a git clone of imgbuild",
        )
    for arch in args.arch:
        if args.variant == DEFAULT_VARIANT:
            image = build_example(arch, output=args.output, force=args.force)
        else:
            image = build_variant(Variant(args.variant), arch, output=args.output, force=args.force)
        print(image.reference, flush=True)
    return 0
