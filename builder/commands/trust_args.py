"""The signature options shared by the commands that fetch an image (inspect, import, plan, the disk formats).

--policy/--registries-d go to skopeo, which enforces the containers signature policy on every fetch.
--ostree-remote NAME [--gpg-key FILE...] names the ostree remote whose keys must have signed the image's
ostree commit: with --gpg-key, the keys are those files; without, the remote is read from
/etc/ostree/remotes.d (IMGBUILD_OSTREE_ROOT re-roots it). A reference written
`ostree-remote-image:NAME:...` asks for the same verification; a plain reference given with --ostree-remote
is verified, and recorded in the origin, in that signed form.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.errors import BadReference
from builder.ostree.remotes import find_remote, from_key_files
from builder.source.policy import Policy
from builder.source.reference import Reference, parse_reference
from builder.source.trust import Trust


def add_arguments(parser: argparse.ArgumentParser, *, install: bool = False) -> None:
    group = parser.add_argument_group("signatures")
    group.add_argument(
        "--policy", type=Path, metavar="FILE", help="containers signature policy (default: skopeo's)"
    )
    group.add_argument(
        "--registries-d", type=Path, metavar="DIR", help="containers registries.d (signature lookaside)"
    )
    group.add_argument(
        "--ostree-remote",
        metavar="NAME",
        help="verify the image's ostree commit with this ostree remote's keys (/etc/ostree/remotes.d)",
    )
    group.add_argument(
        "--gpg-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="the ostree remote's GPG public key, instead of its remotes.d configuration (repeatable)",
    )
    if install:
        group.add_argument(
            "--install-remote",
            action="store_true",
            help="install the ostree remote's configuration and keys into the image's /etc",
        )


def resolve(args: argparse.Namespace) -> tuple[Reference, Trust]:
    """The reference (in its signed form when an ostree remote verifies it) and what verifies it."""
    ref = parse_reference(args.reference)
    name: str | None = args.ostree_remote
    if name is not None and ref.remote is not None and ref.remote != name:
        raise BadReference(
            f"{ref.origin} names ostree remote {ref.remote}, but --ostree-remote says {name}",
            hint="give the remote once",
        )
    name = name or ref.remote
    keys = tuple(args.gpg_key)
    if keys and name is None:
        raise BadReference(
            "--gpg-key needs the ostree remote it belongs to",
            hint="pass --ostree-remote NAME, or write the reference as ostree-remote-image:NAME:...",
        )
    remote = None
    if name is not None:
        remote = from_key_files(name, keys) if keys else find_remote(name)
        ref = ref.with_remote(name)
    install = bool(getattr(args, "install_remote", False))
    if install and remote is None:
        raise BadReference(
            "--install-remote needs an ostree remote", hint="pass --ostree-remote NAME (and --gpg-key FILE)"
        )
    return ref, Trust(Policy(args.policy, args.registries_d), remote, install)
