"""Boot settings that the image itself carries, read from its commit before it is deployed.

- `/usr/lib/bootc/kargs.d/*.toml`: kernel arguments that bootc adds at install time (after the root
  arguments and before the user's), in file name order, each file optionally limited to some
  architectures: `kargs = ["console=ttyS0"]`, `match-architectures = ["x86_64"]`.
- `prepare-root.conf`: whether composefs must be turned off (builder.ostree.prepareroot).

The files are read out of the commit through libostree, without a checkout.
"""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from builder.arch import Arch
from builder.errors import ImgbuildError, NotBootable
from builder.ostree.gi import Gio, GLib, open_repo
from builder.ostree.prepareroot import CONFIG_PATHS as PREPARE_ROOT_PATHS
from builder.ostree.prepareroot import ComposefsDecision, composefs_policy

KARGS_DIR = "usr/lib/bootc/kargs.d"


class CommitMissing(ImgbuildError):
    """The commit to read is not in the repository."""


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


def read_commit(repo: Any, commit: str) -> Any | None:
    """The root of `commit` as a GFile, or None when the repository does not have it."""
    try:
        ok, tree, _ = repo.read_commit(commit, None)
    except GLib.Error:
        return None
    return tree if ok else None


def _read_repo_file(file: Any) -> bytes:
    # g_file_load_contents() trips over the plain GInputStream an OstreeRepoFile returns: read it by hand.
    stream = file.read(None)
    chunks = []
    while True:
        chunk = stream.read_bytes(65536, None).get_data()
        if not chunk:
            break
        chunks.append(bytes(chunk))
    stream.close(None)
    return b"".join(chunks)


def _is_regular(file: Any) -> bool:
    if not file.query_exists(None):
        return False
    info = file.query_info("standard::type", Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None)
    return bool(info.get_file_type() == Gio.FileType.REGULAR)


def extract_files(
    repo_path: Path, commit: str, dest: Path, files: Iterable[str], dirs: Iterable[str]
) -> None:
    """Copy the regular files `files` and those directly in `dirs` of `commit` to the same paths in `dest`."""
    repo = open_repo(repo_path)
    tree = read_commit(repo, commit)
    if tree is None:
        raise CommitMissing(f"commit {commit} is not in {repo_path}", hint="import the image first")
    wanted = [tree.resolve_relative_path(f) for f in files]
    for directory in dirs:
        folder = tree.resolve_relative_path(directory)
        if folder.query_exists(None):
            flags = Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS
            wanted += [
                folder.get_child(i.get_name())
                for i in folder.enumerate_children("standard::name", flags, None)
            ]
    for file in wanted:
        if _is_regular(file):
            target = dest / tree.get_relative_path(file)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_read_repo_file(file))


def commit_composefs_policy(repo_path: Path, commit: str) -> ComposefsDecision:
    """composefs_policy() of a commit in a repository."""
    with tempfile.TemporaryDirectory(prefix="imgbuild-imageconfig-") as tmp:
        extract_files(repo_path, commit, Path(tmp), PREPARE_ROOT_PATHS, ())
        return composefs_policy(Path(tmp))


def commit_image_kargs(repo_path: Path, commit: str, arch: Arch) -> tuple[str, ...]:
    """image_kargs() of a commit in a repository."""
    with tempfile.TemporaryDirectory(prefix="imgbuild-imageconfig-") as tmp:
        extract_files(repo_path, commit, Path(tmp), (), (KARGS_DIR,))
        return image_kargs(Path(tmp), arch)
