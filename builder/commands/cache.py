"""`imgbuild cache info` and `imgbuild cache prune`: what the cache holds, and removing what nobody uses."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from builder import paths
from builder.cachedir import inventory
from builder.cachedir.inventory import CachedImage, Inventory
from builder.cachedir.prune import Entry, Outcome, prune
from builder.errors import ImgbuildError
from builder.sizefmt import human


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "cache",
        help="show what the cache holds, or remove what nobody uses",
        description="The cache ($IMGBUILD_CACHE, else $XDG_CACHE_HOME/imgbuild or ~/.cache/imgbuild) keeps "
        "the fetched blobs and the ostree repository of imported images, so that a second build of an "
        "image fetches and imports nothing.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    info = actions.add_parser(
        "info",
        help="the images in the cache, their sizes and last use, and the total (as du -sb counts it)",
        description="Each imported image with its reference, commit, size (what it holds; 'own' is what "
        "removing it alone frees) and last use; manifests fetched but not imported; the total.",
    )
    _cache_option(info)
    info.add_argument("--json", action="store_true", help="print one JSON document")
    info.set_defaults(func=run_info)

    p = actions.add_parser(
        "prune",
        help="remove the images nobody uses: all of them, or all but the N used last",
        description="Removes images (their refs, the ostree objects no other image needs, their blobs). "
        "Safe while builds run: an image a running command uses is kept, and prune waits for running "
        "fetches and imports to finish before it removes anything.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--keep-last", type=_count, metavar="N", help="keep the N images used most recently")
    which.add_argument("--all", action="store_true", help="remove every image not in use")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    _cache_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_prune)


def _cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="the imgbuild cache (default: $IMGBUILD_CACHE or ~/.cache/imgbuild)",
    )


def _count(text: str) -> int:
    if not text.isdigit():
        raise ImgbuildError(
            f"--keep-last takes a number of images, not {text!r}", hint="e.g. --keep-last 2, or --all"
        )
    return int(text)


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp)) if stamp else "never recorded"


def _name(entry: Entry) -> str:
    return entry.reference if isinstance(entry, CachedImage) else f"{entry.manifest_digest} (fetched only)"


def _line(entry: Entry) -> str:
    commit = f"commit {entry.commit[:12]}  " if isinstance(entry, CachedImage) else ""
    used = f"  in use (pid {', '.join(map(str, entry.in_use))})" if entry.in_use else ""
    return (
        f"  {_name(entry)}\n    {commit}{human(entry.size)} ({human(entry.exclusive)} its own)  "
        f"last used {_when(entry.last_used)}{used}"
    )


def format_info(inv: Inventory) -> str:
    lines = [f"cache {inv.root}: {human(inv.total)}"]
    mode = f", {inv.repo_mode}" if inv.repo_mode else ""
    lines.append(f"images (ostree repository {inv.root / 'repo'}{mode}): {len(inv.images)}")
    lines += [_line(image) for image in inv.images]
    if inv.fetched:
        lines.append(f"fetched, not imported: {len(inv.fetched)}")
        lines += [_line(entry) for entry in inv.fetched]
    lines.append(f"blobs ({inv.root / 'oci'}): {inv.blob_count}, {human(inv.parts.get('oci', 0))}")
    parts = ", ".join(f"{name} {human(size)}" for name, size in inv.parts.items() if name != "(directory)")
    lines.append(f"on disk: {parts or 'nothing (no cache yet)'}")
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    cache = args.cache or paths.cache_dir()
    inv = inventory.take(cache)
    print(json.dumps(inv.to_json(), indent=2) if args.json else format_info(inv))
    return 0


def _prune_json(outcome: Outcome, dry_run: bool) -> dict[str, object]:
    d = outcome.decision
    return {
        "dry_run": dry_run,
        "removed": [_name(e) for e in d.remove],
        "kept": [_name(e) for e in d.keep],
        "in_use": [_name(e) for e in d.in_use],
        "before": outcome.before,
        "after": outcome.after,
        "freed": outcome.before - outcome.after,
        "objects_pruned": outcome.objects_pruned,
    }


def run_prune(args: argparse.Namespace) -> int:
    cache = args.cache or paths.cache_dir()

    def waiting() -> None:
        print("imgbuild: waiting for a running fetch or import to finish", file=sys.stderr, flush=True)

    outcome = prune(cache, None if args.all else args.keep_last, dry_run=args.dry_run, on_wait=waiting)
    if args.json:
        print(json.dumps(_prune_json(outcome, args.dry_run), indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for entry in outcome.decision.remove:
        print(f"{verb} {_name(entry)} ({human(entry.exclusive)} its own)")
    for entry in outcome.decision.in_use:
        print(f"kept {_name(entry)}: in use (pid {', '.join(map(str, entry.in_use))})")
    freed = outcome.before - outcome.after
    if args.dry_run:
        print(f"would free at least {human(freed)} of {human(outcome.before)}")
    else:
        print(f"freed {human(freed)}: the cache holds {human(outcome.after)}")
    return 0
