"""`imgbuild encapsulate`: write an ostree commit as an ostree-native OCI image."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from builder.arch import Arch
from builder.errors import ImgbuildError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "encapsulate",
        help="write an ostree commit as an ostree-native container image",
        description="Write an ostree commit as an ostree-native OCI image (chunked layout) and print the "
        "manifest digest.",
    )
    parser.add_argument("--repo", required=True, type=Path, help="the ostree repository")
    parser.add_argument("rev", help="a ref or commit checksum of the repository")
    parser.add_argument("dest", help="oci:DIR[:TAG] or oci-archive:FILE[:TAG]")
    parser.add_argument("--max-layers", type=int, default=64, help="at most this many layers (default 64)")
    parser.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="an extra config label (repeatable)"
    )
    parser.add_argument("--arch", help="image architecture (default: from the commit, else the host)")
    parser.set_defaults(func=run)


def parse_labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ImgbuildError(f"bad label {item!r}", hint="write --label KEY=VALUE")
        labels[key] = value
    return labels


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception, so that the partial output is removed as on Ctrl-C."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough while the cleanup runs
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    from builder.ostree.encapsulate import encapsulate

    with sigterm_raises():
        result = encapsulate(
            args.repo,
            args.rev,
            args.dest,
            max_layers=args.max_layers,
            extra_labels=parse_labels(args.label),
            arch=Arch.parse(args.arch) if args.arch else None,
        )
    print(result.manifest_digest)
    return 0
