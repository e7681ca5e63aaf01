"""Labelling what the build wrote outside the commit with the image's own SELinux policy.

ostree labels new files only when the build host runs SELinux, so, like osbuild's org.osbuild.ostree.selinux
stage, the deployment's /etc, the stateroot's /var and /boot are labelled with `setfiles` (Debian's
policycoreutils) and the image's file_contexts. setfiles works with SELinux disabled on the host and with a
policy that is not the host's: without `-c` it does not validate contexts against a loaded policy.
The commit's /usr keeps the labels it was imported with.

Each path is looked up as the booted system sees it (`-r` strips an alternate root): the deployment's etc/
as /etc, the stateroot's var/ as /var, the sysroot's boot/ as /boot.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from builder import run
from builder.errors import ImgbuildError

if TYPE_CHECKING:
    from builder.ostree.deploy import Deployment

log = logging.getLogger(__name__)

DEFAULT_PATHS = (PurePosixPath("/etc"), PurePosixPath("/var"), PurePosixPath("/boot"))
CONFIG_PATHS = ("etc/selinux/config", "usr/etc/selinux/config")
# Files libselinux reads beside file_contexts (label_file.c): path equivalences and local additions.
COMPANIONS = (".subs_dist", ".subs", ".homedirs", ".local")
_SELINUXTYPE = re.compile(r"^\s*SELINUXTYPE\s*=\s*(\S+?)\s*$", re.MULTILINE)


class SelinuxError(ImgbuildError):
    """The image's SELinux policy cannot be used to label the deployment."""


def find_file_contexts(deploy_root: Path) -> Path | None:
    """The image's file_contexts named by its selinux config, or None when the image has no policy."""
    for relative in CONFIG_PATHS:
        config = deploy_root / relative
        if not config.is_file():
            continue
        match = _SELINUXTYPE.search(config.read_text(encoding="utf-8", errors="replace"))
        if match is None:
            continue
        policy = match.group(1).strip("\"'")
        if "/" in policy or policy in (".", ".."):
            raise SelinuxError(f"/{relative} names an invalid SELINUXTYPE {policy!r}")
        contexts = config.parent / policy / "contexts" / "files" / "file_contexts"
        if not contexts.is_file():
            raise SelinuxError(
                f"/{relative} names the SELinux policy {policy!r}, but the image has no "
                f"/{contexts.relative_to(deploy_root)}",
                hint="install the policy package in the image, or set SELINUX=disabled without SELINUXTYPE",
            )
        return contexts
    return None


def _split(root: Path, deployment: Deployment, path: Path | PurePosixPath | str) -> tuple[Path, Path]:
    """(alternate root, host path) for `path`, a host path under `root` or a path of the booted system."""
    host = Path(path)
    if host.is_absolute() and host.is_relative_to(root):
        if host.is_relative_to(deployment.path):
            system = PurePosixPath("/", host.relative_to(deployment.path))
        elif host.is_relative_to(deployment.stateroot_dir):
            system = PurePosixPath("/", host.relative_to(deployment.stateroot_dir))
        else:
            system = PurePosixPath("/", host.relative_to(root))
    else:
        system = PurePosixPath(path)
    if not system.is_absolute() or ".." in system.parts:
        raise ValueError(f"not an absolute, normalised path: {path}")
    top = system.parts[1] if len(system.parts) > 1 else ""
    if top == "usr" or top == "":
        raise ValueError(
            f"{system}: the commit's labels are kept as imported; label only what the build made"
        )
    if top == "var":
        alt = deployment.stateroot_dir
    elif top == "boot":
        alt = root
    else:
        alt = deployment.path
    return alt, alt / system.relative_to("/")


def _canonical(path: Path) -> Path:
    # setfiles compares the realpath of each path with the alternate root: give it canonical ones, without
    # following a symlink that is the last component (/var/run is labelled as the link it is).
    return path.parent.resolve() / path.name


def _count(path: Path) -> int:
    if not os.path.lexists(path):
        return 0
    if not path.is_dir() or path.is_symlink():
        return 1
    total = 1
    for _dirpath, dirnames, filenames in os.walk(path):
        total += len(dirnames) + len(filenames)
    return total


def selinux_label(
    root: Path,
    deployment: Deployment,
    paths: Sequence[Path | PurePosixPath | str] = DEFAULT_PATHS,
) -> int:
    """Label `paths` (default /etc, /var, /boot) with the image's file_contexts; the number of files labelled.

    Returns 0 without touching anything when the image has no SELinux policy.
    """
    contexts = find_file_contexts(deployment.path)
    if contexts is None:
        log.info("the image has no SELinux policy: nothing to label")
        return 0
    groups: dict[Path, list[Path]] = {}
    for path in paths:
        alt, host = _split(root, deployment, path)
        if os.path.lexists(host):
            groups.setdefault(alt.resolve(), []).append(_canonical(host))
    if not groups:
        return 0
    setfiles = run.require("setfiles")
    with tempfile.TemporaryDirectory(prefix="imgbuild-selinux-") as tmp:
        # A private copy of the text file_contexts: libselinux would otherwise prefer a file_contexts.bin
        # beside it, whose compiled format may be newer than the host's libselinux reads.
        spec = Path(tmp) / "file_contexts"
        shutil.copyfile(contexts, spec)
        for suffix in COMPANIONS:
            companion = contexts.with_name(contexts.name + suffix)
            if companion.is_file():
                shutil.copyfile(companion, spec.with_name(spec.name + suffix))
        total = 0
        for alt, hosts in sorted(groups.items()):
            # -F: set the whole context (user, role, range), -m: do not skip mounts without "seclabel"
            # (with SELinux off none has it), -r: look paths up without the alternate root prefix.
            run.run(
                [setfiles, "-F", "-m", "-r", alt, spec, *hosts],
                hint="the image's file_contexts may use a syntax this host's libselinux does not read",
            )
            total += sum(_count(host) for host in hosts)
    log.info("labelled %d files with %s", total, contexts.relative_to(deployment.path))
    return total
