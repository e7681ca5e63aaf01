"""What every command's parser shares, defined once: no abbreviations, case-insensitive choices, one size
syntax, the registry options of every command that fetches, the output directory check and --chown.

Argument types raise ImgbuildError (one line, a hint naming the valid values, exit 2): argparse's own
messages would name Python classes (`invalid Rootfs value`).
"""

from __future__ import annotations

import argparse
import enum
import grp
import os
import pwd
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from builder.blueprint.sizes import SYNTAX, SizeError, parse_size
from builder.errors import ImgbuildError
from builder.paths import cache_dir
from builder.source.access import RegistryAccess
from builder.source.fetch import fetch_image
from builder.source.image import Image
from builder.source.reference import Reference
from builder.source.trust import Trust


class Parser(argparse.ArgumentParser):
    """Every parser of imgbuild (subparsers inherit the class): `--out` is never taken for `--output`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


E = TypeVar("E", bound=enum.Enum)


def choice(what: str, values: Iterable[str]) -> Callable[[str], str]:
    """An argument type accepting one of `values` in any case (`XFS`, `Json`)."""
    allowed = tuple(values)

    def parse(text: str) -> str:
        for value in allowed:
            if text.strip().lower() == value.lower():
                return value
        raise ImgbuildError(f"unknown {what} {text!r}", hint=f"use one of: {', '.join(allowed)}")

    parse.__name__ = what  # argparse names the type in its own messages
    setattr(parse, "choices", allowed)  # noqa: B010 (for the completion and the man page: builder.parserdoc)
    return parse


def enum_choice(what: str, cls: type[E]) -> Callable[[str], E]:
    """`choice` for an enum whose values are what users write (Rootfs, ProgressMode)."""
    by_value = choice(what, [str(member.value) for member in cls])

    def parse(text: str) -> E:
        return cls(by_value(text))

    parse.__name__ = what
    setattr(parse, "choices", getattr(by_value, "choices"))  # noqa: B009, B010
    return parse


def metavar(values: Iterable[object]) -> str:
    return "{" + ",".join(str(getattr(v, "value", v)) for v in values) + "}"


def size(text: str) -> int:
    """--size: bytes, from the one size syntax (builder.blueprint.sizes)."""
    try:
        return parse_size(text)
    except SizeError as e:
        raise ImgbuildError(f"--size: {e}", hint=f"a size is {SYNTAX}") from None


def registry_arguments(parser: argparse.ArgumentParser) -> None:
    """--authfile, --tls-verify and --cache: on every command that fetches an image."""
    group = parser.add_argument_group("registry and cache")
    group.add_argument(
        "--authfile",
        type=Path,
        metavar="FILE",
        help="containers auth.json for the registry (default: REGISTRY_AUTH_FILE, then "
        "$XDG_RUNTIME_DIR/containers/auth.json)",
    )
    group.add_argument(
        "--tls-verify",
        type=choice("--tls-verify value", ("true", "false")),
        default="true",
        metavar="{true,false}",
        help="verify the registry's TLS certificate (false: a plain-HTTP registry on loopback)",
    )
    group.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="imgbuild's cache: blobs, ostree repository, stage records (default: IMGBUILD_CACHE, "
        "else ~/.cache/imgbuild)",
    )


def registry(args: argparse.Namespace) -> RegistryAccess:
    return RegistryAccess(args.authfile, args.tls_verify == "true")


def cache_root(args: argparse.Namespace) -> Path:
    given: Path | None = getattr(args, "cache", None)
    return given if given is not None else cache_dir()


def fetch(args: argparse.Namespace, ref: Reference, trust: Trust) -> Image:
    """Fetch `ref` into the cache (`--cache`) with the registry options (`--authfile`, `--tls-verify`), for
    `--arch`, verified by `trust`'s policy. The caller holds the cache's writer lock while it reads the
    blobs."""
    access = registry(args)
    return fetch_image(
        ref,
        arch=args.arch,
        cache=cache_root(args) / "oci",
        authfile=access.authfile,
        tls_verify=access.tls_verify,
        policy=trust.policy,
    )


def check_output_dir(directory: Path) -> None:
    """Before anything is fetched: --output is a directory (or can be made) and writable. Room is not
    checked: how much a build needs is known only once the image is imported."""
    if directory.exists() and not directory.is_dir():
        raise ImgbuildError(
            f"--output {directory} is a file, not a directory",
            hint="--output names a directory the outputs are written into (plan's -o names a file)",
        )
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ImgbuildError(
            f"--output {directory}: {existing} is not a directory", hint="choose another --output"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ImgbuildError(
            f"--output {directory}: {existing} is not writable", hint="choose a writable --output directory"
        )


def check_output_file(path: Path) -> None:
    """`-o FILE`, before anything is fetched: a file (not a directory) in a directory that is writable."""
    if path.is_dir():
        raise ImgbuildError(f"-o {path} is a directory", hint="-o names a file; --output names a directory")
    parent = path.parent
    if not parent.is_dir():
        raise ImgbuildError(
            f"-o {path}: {parent} is not a directory", hint="create it first, or choose another -o"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ImgbuildError(f"-o {path}: {parent} is not writable", hint="choose another -o")


def owner(text: str) -> tuple[int, int]:
    """--chown UID:GID (numbers, or names of this machine's users and groups)."""
    user, sep, group = text.partition(":")
    if not user or (sep and not group):
        raise ImgbuildError(f"--chown {text!r}: a user and a group are needed", hint="write --chown UID:GID")
    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        gid = -1 if not sep else int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ImgbuildError(
            f"--chown {text}: no such user or group on this machine",
            hint="write --chown UID:GID with numbers",
        ) from None
    return uid, gid


def chown_written(output: Path, names: Iterable[str], ids: tuple[int, int]) -> None:
    """Give the files a build wrote under `output` (and the directories leading to them, `output`
    included) to `ids`: the user who asked for them can delete and move them without root."""
    uid, gid = ids
    os.chown(output, uid, gid)
    for name in names:
        path = output / name
        for parent in reversed(path.relative_to(output).parents[:-1]):
            os.chown(output / parent, uid, gid)
        os.chown(path, uid, gid, follow_symlinks=False)


@dataclass(frozen=True)
class Refusal:
    """Why another tool's option means nothing here, and what to do instead."""

    reason: str
    hint: str


class Refused(argparse.Action):
    """An option of another tool that imgbuild knows and refuses with its Refusal, instead of argparse's
    `unrecognized arguments`."""

    def __init__(self, option_strings: list[str], dest: str, *, refusal: Refusal, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "?")
        super().__init__(option_strings, dest, **kwargs)
        self.refusal = refusal

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: Any) -> None:
        raise ImgbuildError(self.refusal.reason, hint=self.refusal.hint)
