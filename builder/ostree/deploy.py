"""Deploying an imported ostree commit into a sysroot: the target disk's mounted filesystems.

The flow follows `bootc install to-filesystem` and osbuild's ostree stages, with what Debian's ostree 2022.7
can do (research/ostree.md §2.4, §4): `ostree admin init-fs --modern`, `sysroot.bootloader=none` (BLS entries
in /boot/loader/entries), os-init of the stateroot, pull-local of the merge commit, `ostree admin deploy`
with an origin file in bootc's format and the planner's kernel arguments. ostree 2022.7 neither seeds /var
(see builder.ostree.sysroot) nor labels files when the host has SELinux off (builder.ostree.selinux).

Everything here runs as root on mounted target filesystems, never on the host's own root filesystem: ostree
FIFREEZEs the filesystem that holds /boot when it finishes a deployment.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from builder import __version__, run
from builder.errors import ImgbuildError, NeedsRoot, NotBootable
from builder.ostree.gi import Gio, OSTree, open_repo
from builder.ostree.imageconfig import commit_composefs_policy, commit_image_kargs
from builder.ostree.mounts import MountSpec, write_mounts, write_swaps
from builder.ostree.prepareroot import ComposefsDecision, composefs_policy
from builder.ostree.repoquery import CommitMissing, CommitTree
from builder.ostree.selinux import selinux_label
from builder.ostree.sysroot import seed_var

__all__ = [
    "ALEPH_NAME",
    "ComposefsDecision",
    "DeployError",
    "Deployment",
    "MountSpec",
    "commit_composefs_policy",
    "commit_image_kargs",
    "composefs_policy",
    "deploy",
    "find_deployment",
    "init_sysroot",
    "pull_commit",
    "seed_var",
    "selinux_label",
    "write_mounts",
    "write_swaps",
]

log = logging.getLogger(__name__)

# Like bootc's /.bootc-aleph.json: what was installed, written at the top of the root filesystem.
ALEPH_NAME = ".imgbuild-aleph.json"

_STATEROOT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_CHECKSUM = re.compile(r"[0-9a-f]{64}")
# Where ostree 2022.7 reads the boot entry's title from (in the commit: /etc is still /usr/etc).
OS_RELEASE = ("usr/lib/os-release", "usr/etc/os-release")


class DeployError(ImgbuildError):
    """The sysroot could not be prepared or the commit could not be deployed."""


@dataclass(frozen=True)
class Deployment:
    """One deployment in a sysroot, with host paths (under the mounted root filesystem)."""

    path: Path  # ROOT/ostree/deploy/<stateroot>/deploy/<commit>.<serial>
    stateroot: str
    commit: str
    var: Path  # ROOT/ostree/deploy/<stateroot>/var, mounted on /var by the booted system
    bls_entries: tuple[Path, ...]  # ROOT/boot/loader/entries/*.conf
    kernel_version: str

    @property
    def sysroot(self) -> Path:
        """The mounted root filesystem: ROOT."""
        return self.path.parents[4]

    @property
    def stateroot_dir(self) -> Path:
        return self.var.parent

    @property
    def etc(self) -> Path:
        return self.path / "etc"


def _need_root() -> None:
    if not run.is_root():
        raise NeedsRoot("deploying an ostree commit needs root", hint="run imgbuild as root (sudo)")


def _check_stateroot(stateroot: str) -> None:
    if not _STATEROOT.fullmatch(stateroot):
        raise ValueError(f"invalid stateroot name {stateroot!r}")


def _check_commit(commit: str) -> None:
    if not _CHECKSUM.fullmatch(commit):
        raise ValueError(f"not an ostree commit checksum: {commit!r}")


def sysroot_repo(root: Path) -> Path:
    return root / "ostree" / "repo"


EATMYDATA = "libeatmydata.so.1"


@functools.cache
def scratch_env() -> Mapping[str, str]:
    """The environment for ostree writing into a filesystem that is scratch until the build ends.

    `ostree admin deploy` ends with syncfs() of the sysroot and /boot and then a global sync() (to make the
    boot entry swap durable on a running system), and pull-local syncs its transaction. Inside an image
    being built that forces the whole disk image through its loop device to the host's disk, and the sync()
    also waits for every other dirty page on the machine (the example's pull-local alone: 1.0 s with its
    sync, 0.6 s without). A crash mid-build leaves nothing under the output's name anyway, so these syncs
    protect nothing: with libeatmydata (Debian's `libeatmydata1`, as mmdebstrap and sbuild use it for
    chroots) they return at once, and the data reaches the output when the filesystems are unmounted and
    converted. Without the library the tools run as they are (slower, same result).
    """
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for lib in (Path("/usr/lib") / multiarch / EATMYDATA, Path("/usr/lib") / EATMYDATA):
        if lib.is_file():
            return {"LD_PRELOAD": str(lib)}
    return {}


def init_sysroot(root: Path, *, stateroot: str = "default", readonly: bool = True) -> Path:
    """Lay out an ostree sysroot in the (mounted) root filesystem at `root`; returns its repository.

    `readonly` sets `sysroot.readonly`, which the image's ostree-remount reads at boot to keep /sysroot
    read-only. Idempotent: a sysroot that exists is reused.
    """
    _need_root()
    _check_stateroot(stateroot)
    repo = sysroot_repo(root)
    env = scratch_env()
    run.run(["ostree", "admin", "init-fs", "--modern", root], env=env)
    run.run(["ostree", f"--repo={repo}", "config", "set", "sysroot.bootloader", "none"], env=env)
    run.run(["ostree", f"--repo={repo}", "config", "set", "sysroot.readonly", str(readonly).lower()], env=env)
    if not (root / "ostree" / "deploy" / stateroot / "var").is_dir():  # os-init fails on an existing one
        run.run(["ostree", "admin", "os-init", f"--sysroot={root}", stateroot], env=env)
    return repo


def pull_commit(source_repo: Path, root: Path, commit: str, *, refs: Sequence[str] = ()) -> None:
    """Copy `commit` and the commits that `refs` name in `source_repo` into the sysroot's repository.

    The refs (ostree/container/image/... and ostree/container/blob/...) are recreated under the same names,
    so that the booted system's bootc or rpm-ostree recognises the image it runs and its layers. They are
    pulled by checksum and then set: pull-local by ref name would check the commits' ref bindings, which a
    merge commit does not carry.
    """
    _need_root()
    _check_commit(commit)
    source = open_repo(source_repo)
    targets: dict[str, str] = {}
    for ref in refs:
        ok, checksum = source.resolve_rev(ref, True)
        if not ok or checksum is None:
            raise DeployError(
                f"the imported repository has no ref {ref}",
                hint=f"re-run the container import into {source_repo}",
            )
        targets[ref] = checksum
    checksums = sorted({commit, *targets.values()})
    run.run(
        ["ostree", f"--repo={sysroot_repo(root)}", "pull-local", source_repo, *checksums], env=scratch_env()
    )
    dest = open_repo(sysroot_repo(root))
    for ref, checksum in sorted(targets.items()):
        dest.set_ref_immediate(None, ref, checksum, None)


def _commit_problem(root: Path, commit: str) -> ImgbuildError | None:
    # Returns rather than raises, so no traceback keeps the sysroot repository open (and its mount busy).
    try:
        tree = CommitTree(sysroot_repo(root), commit)
    except CommitMissing:
        return DeployError(f"commit {commit} is not in the sysroot repository", hint="pull it first")
    if not any(tree.exists(p) for p in OS_RELEASE):
        return NotBootable(
            "the image has no os-release (/usr/lib/os-release or /usr/etc/os-release)",
            hint="ostree needs os-release to name the boot entry; add it to the image",
        )
    kernels = [k for k in tree.listdir("usr/lib/modules") if tree.exists(f"usr/lib/modules/{k}/vmlinuz")]
    if not kernels and not tree.exists("boot"):
        return NotBootable(
            "the image has no kernel in /usr/lib/modules/<version>/vmlinuz",
            hint="install a kernel (and an initramfs.img beside it) in the image",
        )
    return None


def _check_bootable(root: Path, commit: str) -> None:
    """Fail with one clear line where `ostree admin deploy` would fail with an obscure one."""
    # Raised here, not where the repository is open: a traceback that holds the open repository in a
    # frame would keep the target filesystem busy when the caller unmounts it.
    problem = _commit_problem(root, commit)
    if problem is not None:
        raise problem


def _check_not_host_filesystem(root: Path) -> None:
    # ostree freezes the filesystem holding /boot; never let that be the build host's own root.
    boot = root / "boot"
    if boot.stat().st_dev == Path("/").stat().st_dev:
        raise DeployError(
            f"refusing to deploy: {boot} is on the build host's root filesystem",
            hint="mount the target's root (and /boot) filesystem at the sysroot first; ostree would freeze "
            "the filesystem that holds /boot",
        )


def deploy(
    root: Path,
    *,
    stateroot: str,
    commit: str,
    kargs: Sequence[str],
    origin_ref: str,
    source_digest: str,
    timestamp: datetime | None = None,
) -> Deployment:
    """Deploy `commit` (already in the sysroot's repository) as the default boot entry of `stateroot`.

    `origin_ref` is what bootc records (`ostree-unverified-registry:registry.invalid/a/b:36`,
    `ostree-unverified-image:oci-archive:/path:latest`); `source_digest` is the image's manifest digest.
    Both go into the origin file and ROOT/.imgbuild-aleph.json. `timestamp` is recorded only when given,
    so that the same inputs give the same files.
    """
    _need_root()
    _check_stateroot(stateroot)
    _check_commit(commit)
    for karg in kargs:
        if not karg or any(c in karg for c in "\n\r\0"):
            raise ValueError(f"invalid kernel argument {karg!r}")
    if "\n" in origin_ref or not origin_ref:
        raise ValueError(f"invalid origin reference {origin_ref!r}")
    _check_not_host_filesystem(root)
    _check_bootable(root, commit)
    with tempfile.TemporaryDirectory(prefix="imgbuild-origin-") as tmp:
        origin = Path(tmp) / "origin"
        origin.write_text(f"[origin]\ncontainer-image-reference={origin_ref}\n")
        argv: list[str | os.PathLike[str]] = [
            "ostree",
            "admin",
            "deploy",
            f"--sysroot={root}",
            f"--os={stateroot}",
            f"--origin-file={origin}",
        ]
        # --karg-append keeps repeated keys (console=tty0 console=ttyS0); --karg would keep only the last.
        argv += [f"--karg-append={karg}" for karg in kargs]
        argv.append(commit)
        hint = "see the ostree message above; the commit may not be a bootable ostree tree"
        run.run(argv, env=scratch_env(), hint=hint)
    deployment = find_deployment(root, stateroot=stateroot, commit=commit)
    _write_aleph(root, deployment, origin_ref, source_digest, kargs, timestamp)
    return deployment


def _lookup_deployment(root: Path, stateroot: str, commit: str) -> Deployment | None:
    sysroot = OSTree.Sysroot.new(Gio.File.new_for_path(str(root)))
    sysroot.load(None)
    for dep in sysroot.get_deployments():
        if dep.get_osname() != stateroot or dep.get_csum() != commit:
            continue
        linux = dep.get_bootconfig().get("linux") or ""
        entries = root / "boot" / "loader" / "entries"
        return Deployment(
            path=root / sysroot.get_deployment_dirpath(dep),
            stateroot=stateroot,
            commit=commit,
            var=root / "ostree" / "deploy" / stateroot / "var",
            bls_entries=tuple(sorted(entries.glob("*.conf"))) if entries.is_dir() else (),
            kernel_version=Path(linux).name.removeprefix("vmlinuz-"),
        )
    return None


def find_deployment(root: Path, *, stateroot: str, commit: str) -> Deployment:
    """The newest deployment of `commit` in `stateroot` of the sysroot at `root`."""
    deployment = _lookup_deployment(root, stateroot, commit)  # raise outside: see _check_bootable
    if deployment is None:
        raise DeployError(
            f"no deployment of {commit[:12]} in stateroot {stateroot!r} under {root}",
            hint="the ostree.deploy stage must run first",
        )
    return deployment


def _write_aleph(
    root: Path,
    deployment: Deployment,
    origin_ref: str,
    source_digest: str,
    kargs: Sequence[str],
    timestamp: datetime | None,
) -> None:
    aleph: dict[str, object] = {
        "imgbuild": __version__,
        "image": {"reference": origin_ref, "digest": source_digest},
        "ostree-commit": deployment.commit,
        "stateroot": deployment.stateroot,
        "kernel": deployment.kernel_version,
        "kargs": list(kargs),
    }
    if timestamp is not None:
        aleph["timestamp"] = timestamp.isoformat()
    path = root / ALEPH_NAME
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(aleph, indent=2, sort_keys=True) + "\n")
    partial.chmod(0o644)
    partial.replace(path)
    log.debug("wrote %s", path)
