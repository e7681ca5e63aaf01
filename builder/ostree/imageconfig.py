"""Boot settings that the image itself carries, read from its commit before it is deployed.

- `/usr/lib/bootc/kargs.d/*.toml`: kernel arguments that bootc adds at install time (after the root
  arguments and before the user's), in file name order, each file optionally limited to some
  architectures: `kargs = ["console=ttyS0"]`, `match-architectures = ["x86_64"]`.
- `prepare-root.conf`: whether composefs must be turned off (builder.ostree.prepareroot).

The files are read out of the commit through libostree (builder.ostree.repoquery), without a checkout.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import Any

from builder.arch import Arch
from builder.errors import NotBootable
from builder.ostree.prepareroot import CONFIG_PATHS as PREPARE_ROOT_PATHS
from builder.ostree.prepareroot import ComposefsDecision, composefs_policy
from builder.ostree.repoquery import CommitMissing, CommitTree

KARGS_DIR = "usr/lib/bootc/kargs.d"


_KARGS_KEYS = {"kargs", "match-architectures"}


def image_kargs(tree: Path, arch: Arch) -> tuple[str, ...]:
    """The kernel arguments of the image's kargs.d files that apply to `arch`, in bootc's order."""
    directory = tree / KARGS_DIR
    if not directory.is_dir():
        return ()
    kargs: list[str] = []
    for path in sorted(directory.glob("*.toml"), key=lambda p: p.name):
        where = f"/{KARGS_DIR}/{path.name}"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise NotBootable(
                f"the image's {where} does not parse: {e}", hint="fix the file in the image"
            ) from e
        unknown = set(data) - _KARGS_KEYS
        values = data.get("kargs", [])
        arches = data.get("match-architectures")
        if unknown or not _strings(values) or (arches is not None and not _strings(arches)):
            raise NotBootable(
                f"the image's {where} is not a kargs.d file bootc accepts",
                hint='expected kargs = ["..."] and optionally match-architectures = ["x86_64", ...]',
            )
        if arches is not None and arch.value not in arches:
            continue
        kargs.extend(values)
    return tuple(kargs)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v and not v.isspace() for v in value)


def tree_composefs_policy(tree: CommitTree) -> ComposefsDecision:
    """composefs_policy() of a commit."""
    with tempfile.TemporaryDirectory(prefix="imgbuild-imageconfig-") as tmp:
        tree.extract(Path(tmp), PREPARE_ROOT_PATHS)
        return composefs_policy(Path(tmp))


def tree_image_kargs(tree: CommitTree, arch: Arch) -> tuple[str, ...]:
    """image_kargs() of a commit."""
    with tempfile.TemporaryDirectory(prefix="imgbuild-imageconfig-") as tmp:
        tree.extract(Path(tmp), (), (KARGS_DIR,))
        return image_kargs(Path(tmp), arch)


def commit_composefs_policy(repo_path: Path, commit: str) -> ComposefsDecision:
    """composefs_policy() of a commit in a repository."""
    return tree_composefs_policy(CommitTree(repo_path, commit))


def commit_image_kargs(repo_path: Path, commit: str, arch: Arch) -> tuple[str, ...]:
    """image_kargs() of a commit in a repository."""
    return tree_image_kargs(CommitTree(repo_path, commit), arch)


__all__ = [
    "CommitMissing",
    "commit_composefs_policy",
    "commit_image_kargs",
    "image_kargs",
    "tree_composefs_policy",
    "tree_image_kargs",
]
