"""The image as the customizations will meet it, from its ostree commit, before any disk exists.

`imgbuild plan`, `imgbuild FORMAT` and `imgbuild blueprint check --image` check a blueprint against the image
here, so a unit, user, group, time zone or path the image does not have is refused before anything is
partitioned, with the same message the build would give. The view is a small copy of what the checks read:
/etc as the deployment will have it (the commit's /usr/etc), the unit directories, the image's own account
files (nss-altfiles), the links at the top of the tree and the time zone asked for. The stateroot's /var is
only seeded at deploy time, so paths under it are not checked here (Target.var_known).
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.blueprint.model import Blueprint
from builder.customize import check
from builder.customize.target import Target
from builder.ostree.repoquery import CommitTree

MAX_LINKS = 8
# What the checks in builder/customize read from /usr and the root of the tree (besides /etc).
IMAGE_PATHS = (
    "lib",
    "home",
    "usr/lib/systemd/system",
    "lib/systemd/system",
    "usr/lib/passwd",
    "usr/lib/group",
    "usr/bin/bash",
)


@contextmanager
def image_view(repo: Path, commit: str, bp: Blueprint) -> Iterator[Target]:
    tree = CommitTree(repo, commit)
    with tempfile.TemporaryDirectory(prefix="imgbuild-view-") as tmp:
        deploy, var, boot = (Path(tmp, name) for name in ("deploy", "var", "boot"))
        for directory in (deploy, var, boot):
            directory.mkdir()
        # ostree-container commits keep the image's /etc in /usr/etc; a deployment gets a copy as /etc.
        tree.copy("usr/etc" if tree.is_dir("usr/etc") else "etc", deploy / "etc")
        for path in IMAGE_PATHS:
            # Never through a link the view already has (`lib` -> usr/lib, or an absolute link, which
            # would lead out of the view into the build host).
            if not _through_link(deploy, path):
                tree.copy(path, deploy / path)
        zoneinfo = "usr/share/zoneinfo"
        if tree.is_dir(zoneinfo):
            (deploy / zoneinfo).mkdir(parents=True)
            if bp.timezone is not None and ".." not in bp.timezone.split("/"):
                _copy_followed(tree, f"{zoneinfo}/{bp.timezone}", deploy / zoneinfo / bp.timezone)
        yield Target(deploy, var, boot, var_known=False)


def _through_link(root: Path, path: str) -> bool:
    current = root
    for part in path.split("/"):
        if current.is_symlink():
            return True
        current = current / part
    return current.is_symlink() or current.exists()


def _copy_followed(tree: CommitTree, path: str, dest: Path) -> None:
    """Copy the file `path` resolves to inside the image (zone names are often links: UTC -> Etc/UTC)."""
    for _ in range(MAX_LINKS):
        link = tree.symlink_target(path)
        if link is None:
            break
        path = posixpath.normpath(
            link.lstrip("/") if link.startswith("/") else posixpath.join(posixpath.dirname(path), link)
        )
        if path.startswith(".."):
            return
    if tree.is_regular(path):
        tree.copy(path, dest)


def check_against_image(bp: Blueprint, repo: Path, commit: str) -> None:
    """Refuse (BlueprintError) what the build's ostree.customize stage would refuse for this image."""
    with image_view(repo, commit, bp) as target:
        check(bp, target)
