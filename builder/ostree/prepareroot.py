"""What the image's ostree-prepare-root will do at boot, and what Debian's ostree 2022.7 can provide for it.

The image's initramfs reads `prepare-root.conf` from `/usr/lib/ostree` and then `/etc/ostree` (keys in the
second override the first), as a GKeyFile. With `[composefs] enabled = yes|true|1|verity|signed` it mounts
the deployment's `.ostree.cfs` composefs image and fails to boot when there is none ("composefs: failed to
mount"). ostree 2022.7 writes no such image, so the deployment must be booted with the kernel argument
`ostree.prepare-root.composefs=0`, which the image's ostree (2024.7 and later) honours over the file.
`maybe` needs nothing: prepare-root falls back to the plain deployment when the image is missing.
"""

from __future__ import annotations

import configparser
import enum
from dataclasses import dataclass
from pathlib import Path

from builder.errors import NotBootable

# Read in this order; a later file's keys override an earlier one's (otcore_load_config). A commit has its
# /etc under usr/etc; a deployment has both, and its etc/ wins.
CONFIG_PATHS = (
    "usr/lib/ostree/prepare-root.conf",
    "usr/etc/ostree/prepare-root.conf",
    "etc/ostree/prepare-root.conf",
)

DISABLE_COMPOSEFS_KARG = "ostree.prepare-root.composefs=0"


class Composefs(enum.StrEnum):
    NO = "no"
    MAYBE = "maybe"
    YES = "yes"
    VERITY = "verity"  # yes, and every file must have fs-verity
    SIGNED = "signed"  # verity, and the commit's signature is checked against a public key


_TRISTATE = {
    "yes": Composefs.YES,
    "true": Composefs.YES,
    "1": Composefs.YES,
    "no": Composefs.NO,
    "false": Composefs.NO,
    "0": Composefs.NO,
    "maybe": Composefs.MAYBE,
    "verity": Composefs.VERITY,
    "signed": Composefs.SIGNED,
}
_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class ComposefsDecision:
    """The kernel arguments the deployment needs, and why, for the manifest."""

    composefs: Composefs  # what the image asks for
    kargs: tuple[str, ...]  # to append to the deployment's kernel arguments
    reason: str | None  # one line for the manifest when kargs is not empty
    root_transient: bool  # [root] transient or transient-ro
    warnings: tuple[str, ...]
    sources: tuple[Path, ...]  # the files that were read, relative to the tree


def _load(tree: Path) -> tuple[configparser.ConfigParser, tuple[Path, ...]]:
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, comment_prefixes=("#",), inline_comment_prefixes=None
    )
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # GKeyFile keys are case-sensitive
    sources: list[Path] = []
    for relative in CONFIG_PATHS:
        path = tree / relative
        if not path.is_file():
            continue
        try:
            parser.read_string(path.read_text(encoding="utf-8"), source=relative)
        except (configparser.Error, UnicodeDecodeError) as e:
            raise NotBootable(
                f"the image's /{relative} does not parse: {str(e).splitlines()[0]}",
                hint="ostree-prepare-root would fail at boot on it; fix the file in the image",
            ) from e
        sources.append(Path(relative))
    return parser, tuple(sources)


def _value(parser: configparser.ConfigParser, section: str, key: str) -> str | None:
    if not parser.has_option(section, key):
        return None
    return parser.get(section, key).strip()


def composefs_policy(tree: Path) -> ComposefsDecision:
    """Read prepare-root.conf in `tree` (a deployment or a checkout of the commit) and decide the kargs."""
    parser, sources = _load(tree)
    enabled_text = _value(parser, "composefs", "enabled")
    composefs = Composefs.NO
    if enabled_text is not None:
        if enabled_text.lower() not in _TRISTATE:
            raise NotBootable(
                f"prepare-root.conf has [composefs] enabled = {enabled_text!r}",
                hint="ostree-prepare-root accepts yes, no, maybe, verity or signed",
            )
        composefs = _TRISTATE[enabled_text.lower()]

    root_transient = False
    for key in ("transient", "transient-ro"):
        text = _value(parser, "root", key)
        if text is not None:
            if text.lower() not in _BOOLEAN:
                raise NotBootable(f"prepare-root.conf has [root] {key} = {text!r}", hint="use true or false")
            root_transient = root_transient or _BOOLEAN[text.lower()]

    kargs: tuple[str, ...] = ()
    reason = None
    warnings: list[str] = []
    if composefs in (Composefs.YES, Composefs.VERITY, Composefs.SIGNED):
        kargs = (DISABLE_COMPOSEFS_KARG,)
        reason = (
            f"the image enables composefs ([composefs] enabled = {enabled_text}) but ostree 2022.7 cannot "
            f"write a composefs image; booting with {DISABLE_COMPOSEFS_KARG} (honoured by the image's "
            "ostree 2024.7 and later)"
        )
        if composefs is Composefs.SIGNED:
            warnings.append("composefs signature verification of the commit is skipped at boot")
        elif composefs is Composefs.VERITY:
            warnings.append("fs-verity of the deployed files is not required at boot")
    if root_transient:
        warnings.append(
            "[root] transient is set: ostree-prepare-root makes / transient only on a composefs mount, "
            "so without composefs the root is the plain, persistent deployment"
        )
    return ComposefsDecision(
        composefs=composefs,
        kargs=kargs,
        reason=reason,
        root_transient=root_transient,
        warnings=tuple(warnings),
        sources=sources,
    )
