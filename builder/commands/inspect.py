"""`imgbuild inspect REF`: fetch an image into the cache and say what it is and whether it boots."""

from __future__ import annotations

import argparse
import json
from typing import Any

from builder.arch import Arch
from builder.cachedir import locks
from builder.commands import options, trust_args
from builder.facts import gather
from builder.ostree.importer import import_image
from builder.ostree.signature import verify_image_commit
from builder.sizefmt import human
from builder.source.inspect import describe


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "inspect",
        help="fetch an image and show its layers, ostree commit and kernels",
        description="Fetch an image into the cache (verifying every digest) and describe it.",
    )
    parser.add_argument(
        "reference", metavar="REF", help="e.g. registry.invalid/fedora/silverblue:36, oci:DIR"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--arch", type=Arch.parse, default=None, help="x86_64 or aarch64 (default: the host's)"
    )
    trust_args.add_arguments(parser)
    options.registry_arguments(parser)
    parser.set_defaults(func=run)


def format_text(summary: dict[str, Any]) -> str:
    lines = [
        f"reference:     {summary['reference']}",
        f"digest:        {summary['digest']}",
        f"architecture:  {summary['architecture']}",
        f"layout:        {summary['layout']}",
        f"ostree commit: {summary['ostree_commit'] or '-'}",
        f"kernels:       {', '.join(summary['kernels']) or '-'}",
        f"bootable:      {'yes' if summary['bootable'] else 'no'}",
    ]
    boot = summary.get("boot")
    if boot is not None:
        problems = boot["secure_boot_problems"]
        lines.append(f"boot chain:    {boot['chain']}")
        lines.append(f"secure boot:   {'yes' if boot['secure_boot'] else 'no: ' + '; '.join(problems)}")
    lines.append("verified:")
    lines += [f"  {line}" for line in summary.get("verified", ())] or ["  no signature (none was required)"]
    lines.append("labels:")
    lines += [f"  {key}={value}" for key, value in summary["labels"].items()] or ["  -"]
    lines.append("layers:")
    for layer in summary["layers"]:
        lines.append(
            f"  {layer['index']:>3} {layer['role']:<14} {human(layer['size']):>10}  "
            f"{layer['compression']:<5} {layer['digest']}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    ref, trust = trust_args.resolve(args)
    cache = options.cache_root(args)
    # The blobs are read after the fetch and the image is imported: `cache prune` must wait meanwhile.
    with locks.writing(cache):
        image = options.fetch(args, ref, trust)
        summary = describe(image)
        verified = list(image.verified)
        if trust.remote is not None:
            verified.append(verify_image_commit(image, trust.remote, reference=ref.origin).describe())
        summary["verified"] = verified
        if image.ostree_commit is not None:
            # The boot chain is read from the files themselves (PE signatures, GRUB's built-in prefix and
            # modules): the image is imported into the cache's repository, as a build would.
            repo = cache / "repo"
            result = import_image(image, repo, imgref=ref.skopeo, remote=trust.remote, shown=ref.origin)
            facts = gather(
                image, reference=ref.skopeo, origin=ref.origin, repo=repo, commit=result.merge_commit
            )
            summary["boot"] = {
                "chain": facts.boot_chain,
                "secure_boot": not facts.secure_boot_problems,
                "secure_boot_problems": list(facts.secure_boot_problems),
            }
    summary["reference"] = str(ref)
    summary["origin"] = ref.origin
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_text(summary))
    return 0
