"""`imgbuild import REF --repo DIR [--arch ARCH]`: import an ostree-native container into an ostree repo.

Prints the merge commit (what to deploy) on stdout; the layers imported and reused go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builder.arch import Arch
from builder.cachedir import locks
from builder.commands import options, trust_args
from builder.ostree.importer import import_image


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "import",
        help="import an ostree-native container image into an ostree repository",
        description="Fetch and verify REF, import its ostree commit and derived layers into the ostree "
        "repository DIR (created if missing) and write the merge commit that gets deployed. Layers "
        "already in DIR are reused.",
    )
    parser.add_argument("reference", metavar="REF", help="the image (registry, oci:, oci-archive:, ...)")
    parser.add_argument("--repo", type=Path, required=True, metavar="DIR", help="the ostree repository")
    parser.add_argument("--arch", type=Arch.parse, help="x86_64 or aarch64 (default: the host's)")
    trust_args.add_arguments(parser)
    options.registry_arguments(parser)
    parser.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    ref, trust = trust_args.resolve(args)
    cache = options.cache_root(args)
    # The layers are read from the cache's blobs: `cache prune` must not remove them meanwhile.
    with locks.writing(cache):
        image = options.fetch(args, ref, trust)
        result = import_image(image, args.repo, imgref=ref.skopeo, remote=trust.remote, shown=ref.origin)
    if result.signature is not None:
        print(f"verified: {result.signature.describe()}", file=sys.stderr)
    print(
        f"imported {len(result.imported_layers)} layer(s), reused {len(result.reused_layers)}; "
        f"base {result.base_commit or 'none'}; ref {result.image_ref}",
        file=sys.stderr,
    )
    for digest in result.imported_layers:
        print(f"  imported {digest}", file=sys.stderr)
    for digest in result.reused_layers:
        print(f"  reused   {digest}", file=sys.stderr)
    print("phases: " + ", ".join(f"{name} {s:.1f} s" for name, s in result.phases), file=sys.stderr)
    print(result.merge_commit)
    return 0
