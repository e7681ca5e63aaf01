"""Deploying a real ostree commit (made here with `ostree commit`) into a sysroot, as root.

One sysroot on a private tmpfs is deployed once per module and checked piece by piece; another goes onto
two loop-mounted ext4 filesystems (root and a separate /boot), the way the build does it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.errors import ImgbuildError, NotBootable
from builder.ostree.deploy import (
    ALEPH_NAME,
    DeployError,
    Deployment,
    MountSpec,
    commit_composefs_policy,
    commit_image_kargs,
    composefs_policy,
    deploy,
    find_deployment,
    init_sysroot,
    pull_commit,
    seed_var,
    selinux_label,
    write_mounts,
)
from tests.integration import deploy_tree
from tests.integration.deploy_tree import KERNEL, USR_LABEL

ORIGIN = "ostree-unverified-registry:registry.invalid/imgbuild/test:36"
DIGEST = "sha256:" + "ab" * 32
IMAGE_REF = "ostree/container/image/registry_2E_invalid/imgbuild/test_3A_36"
BLOB_REF = "ostree/container/blob/sha256_3A_" + "cd" * 32
ROOT_UUID = "0a1b2c3d-0000-4000-8000-000000000001"
BOOT_UUID = "0a1b2c3d-0000-4000-8000-000000000002"
MOUNTS = (
    MountSpec("/boot", BOOT_UUID, "ext4", "ro"),
    MountSpec("/boot/efi", "ABCD-1234", "vfat", "umask=0077,shortname=winnt"),
    MountSpec("/var/log", "0a1b2c3d-0000-4000-8000-000000000003", "xfs", "defaults"),
)


def label(path: Path) -> str:
    return os.getxattr(path, "security.selinux", follow_symlinks=False).rstrip(b"\0").decode()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("deploy-source")
    deploy_tree.make_tree(work / "tree")
    repo = work / "repo"
    commit = deploy_tree.commit_tree(repo, work / "tree")
    # The importer's refs for the image and a layer (here both name the same commit).
    run.run(["ostree", f"--repo={repo}", "refs", f"--create={IMAGE_REF}", commit])
    run.run(["ostree", f"--repo={repo}", "refs", f"--create={BLOB_REF}", commit])
    return repo, commit


def _full_deploy(root: Path, repo: Path, commit: str) -> tuple[Deployment, int]:
    sysroot_repo = init_sysroot(root, stateroot="default", readonly=True)
    assert sysroot_repo == root / "ostree" / "repo"
    pull_commit(repo, root, commit, refs=[IMAGE_REF, BLOB_REF])
    assert commit_image_kargs(repo, commit, Arch.X86_64) == (
        "console=ttyS0,115200n8",
        "mitigations=auto,nosmt",
    )
    assert commit_image_kargs(repo, commit, Arch.AARCH64) == ("mitigations=auto,nosmt", "console=ttyAMA0")
    composefs = commit_composefs_policy(repo, commit)
    assert composefs.kargs == ("ostree.prepare-root.composefs=0",)
    kargs = [f"root=UUID={ROOT_UUID}", "rw", "console=tty0", "console=ttyS0", *composefs.kargs]
    deployment = deploy(
        root, stateroot="default", commit=commit, kargs=kargs, origin_ref=ORIGIN, source_digest=DIGEST
    )
    seed_var(deployment)
    write_mounts(deployment, MOUNTS)
    labelled = selinux_label(root, deployment, [Path("/etc"), Path("/var"), Path("/boot")])
    return deployment, labelled


@pytest.fixture(scope="module")
def deployed(
    source: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Deployment, int]]:
    repo, commit = source
    with deploy_tree.tmpfs_root(tmp_path_factory.mktemp("sysroot")) as root:
        deployment, labelled = _full_deploy(root, repo, commit)
        yield root, deployment, labelled


def test_deployment_dir_and_origin(deployed: tuple[Path, Deployment, int], source: tuple[Path, str]) -> None:
    root, dep, _ = deployed
    commit = source[1]
    assert dep.path == root / f"ostree/deploy/default/deploy/{commit}.0"
    assert dep.var == root / "ostree/deploy/default/var"
    assert dep.sysroot == root and dep.commit == commit and dep.stateroot == "default"
    assert (dep.path / "usr/bin/tool").is_file()
    assert (dep.path / "etc/passwd").read_text().startswith("root:")  # /usr/etc checked out as /etc
    origin = Path(f"{dep.path}.origin").read_text()
    assert origin == f"[origin]\ncontainer-image-reference={ORIGIN}\n"
    config = (root / "ostree/repo/config").read_text()
    assert "bootloader=none" in config and "readonly=true" in config
    assert find_deployment(root, stateroot="default", commit=commit) == dep


def test_refs_kept(deployed: tuple[Path, Deployment, int], source: tuple[Path, str]) -> None:
    root, _, _ = deployed
    refs = run.run(["ostree", f"--repo={root}/ostree/repo", "refs"]).out.split()
    assert IMAGE_REF in refs and BLOB_REF in refs
    resolved = run.run(["ostree", f"--repo={root}/ostree/repo", "rev-parse", IMAGE_REF]).out
    assert resolved.strip() == source[1]


def test_bls_entry(deployed: tuple[Path, Deployment, int]) -> None:
    root, dep, _ = deployed
    assert dep.kernel_version == KERNEL
    assert dep.bls_entries == (root / "boot/loader/entries/ostree-1-default.conf",)
    entry = dict(line.split(" ", 1) for line in dep.bls_entries[0].read_text().splitlines())
    assert entry["title"] == "Imgbuild Test OS 1 (ostree:0)"
    options = entry["options"].split()
    # Repeated keys (two consoles) are all kept, in order.
    assert options[:5] == [
        f"root=UUID={ROOT_UUID}",
        "rw",
        "console=tty0",
        "console=ttyS0",
        "ostree.prepare-root.composefs=0",
    ]
    assert any(o.startswith("ostree=/ostree/boot.1/default/") for o in options)
    assert entry["linux"].endswith(f"/vmlinuz-{KERNEL}")
    assert (root / "boot" / entry["linux"].lstrip("/")).read_bytes() == b"not really a kernel\n"
    assert (root / "boot" / entry["initrd"].lstrip("/")).is_file()


def test_aleph(deployed: tuple[Path, Deployment, int]) -> None:
    root, dep, _ = deployed
    aleph = json.loads((root / ALEPH_NAME).read_text())
    assert aleph["image"] == {"reference": ORIGIN, "digest": DIGEST}
    assert aleph["ostree-commit"] == dep.commit and aleph["kernel"] == KERNEL
    assert aleph["kargs"][:2] == [f"root=UUID={ROOT_UUID}", "rw"]
    assert "timestamp" not in aleph  # deterministic unless a time is given
    assert not list(root.glob("*.partial"))


def test_var_seeded_from_the_commit(deployed: tuple[Path, Deployment, int]) -> None:
    _, dep, _ = deployed
    var = dep.var
    data = var / "lib/app/data"
    st = data.lstat()
    assert data.read_bytes() == b"state\n"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (990, 991, 0o640)
    assert (var / "lib/app").stat().st_uid == 990
    assert os.getxattr(data, "user.imgbuild") == b"kept"
    assert data.samefile(var / "lib/app/data.hardlink")
    assert st.st_nlink == 2  # linked to each other, not to the repository's objects
    assert (var / "lib/app/current").readlink() == Path("data")
    assert stat.S_IMODE((var / "log/app.log").stat().st_mode) == 0o600
    assert (var / "cache/app/index").read_bytes() == b"index\n"  # from the commit's own var/
    # what os-init made is left alone
    assert (var / "run").readlink() == Path("../run")
    assert stat.S_IMODE((var / "tmp").stat().st_mode) == 0o1777


def test_var_tmpfiles_and_links(deployed: tuple[Path, Deployment, int]) -> None:
    _, dep, _ = deployed
    var = dep.var
    assert stat.S_IMODE((var / "roothome").stat().st_mode) == 0o700
    for d in ("home", "usrlocal/bin", "usrlocal/sbin", "opt", "srv"):
        assert (var / d).is_dir() and not (var / d).is_symlink(), d
    svc = (var / "lib/svc").stat()
    assert (svc.st_uid, svc.st_gid, stat.S_IMODE(svc.st_mode)) == (990, 991, 0o750)  # from usr/lib/passwd
    assert (var / "lib/rpm").readlink() == Path("../../usr/share/rpm")
    assert not (var / "lib/ghost").exists()  # unknown user: left to systemd-tmpfiles at boot
    assert not (var / "lib/notadir").exists()  # only directories, links and copies
    assert not any(p.name.startswith("%") for p in (var / "cache").iterdir())


def test_mount_units(deployed: tuple[Path, Deployment, int]) -> None:
    root, dep, _ = deployed
    units = dep.path / "etc/systemd/system"
    boot = (units / "boot.mount").read_text()
    assert f"What=/dev/disk/by-uuid/{BOOT_UUID}\n" in boot and "Where=/boot\n" in boot
    assert "Type=ext4\n" in boot and "Options=ro\n" in boot
    efi = (units / "boot-efi.mount").read_text()
    assert "What=/dev/disk/by-uuid/ABCD-1234\n" in efi and "Options=umask=0077,shortname=winnt\n" in efi
    assert "Where=/var/log\n" in (units / "var-log.mount").read_text()
    for name in ("boot.mount", "boot-efi.mount", "var-log.mount"):
        link = units / "local-fs.target.wants" / name
        assert link.readlink() == Path(f"/etc/systemd/system/{name}")
    assert not (units / "-.mount").exists()
    assert (root / "boot/efi").is_dir()


def test_selinux_labels(deployed: tuple[Path, Deployment, int]) -> None:
    root, dep, labelled = deployed
    assert labelled > 20
    assert label(dep.path / "etc") == "system_u:object_r:etc_t:s0"
    assert label(dep.path / "etc/passwd") == "system_u:object_r:etc_t:s0"
    assert label(dep.path / "etc/systemd/system/boot.mount") == "system_u:object_r:systemd_unit_file_t:s0"
    # /var is looked up as /var, not as /ostree/deploy/default/var
    assert label(dep.var / "log/app.log") == "system_u:object_r:var_log_t:s0"
    assert label(dep.var / "lib/app/data") == "system_u:object_r:var_lib_t:s0"
    assert label(dep.var / "cache") == "system_u:object_r:var_t:s0"
    assert label(dep.var / "home") == "system_u:object_r:home_root_t:s0"  # file_contexts.subs_dist
    assert label(dep.bls_entries[0]) == "system_u:object_r:boot_t:s0"
    assert label(root / "boot/ostree") == "system_u:object_r:boot_t:s0"
    # the commit's /usr keeps its imported label
    assert os.getxattr(dep.path / "usr/bin/tool", "security.selinux").rstrip(b"\0") == USR_LABEL


def test_selinux_takes_host_paths(deployed: tuple[Path, Deployment, int], tmp_path: Path) -> None:
    root, dep, _ = deployed
    probe = dep.var / "lib/probe"
    probe.write_text("x")
    assert selinux_label(root, dep, [dep.var / "lib/probe"]) == 1
    assert label(probe) == "system_u:object_r:var_lib_t:s0"
    # a sysroot reached through a symlink: setfiles is given canonical paths
    (tmp_path / "link").symlink_to(root)
    linked = find_deployment(tmp_path / "link", stateroot="default", commit=dep.commit)
    os.removexattr(probe, "security.selinux")
    assert selinux_label(tmp_path / "link", linked, [linked.var / "lib/probe", "/etc/passwd"]) == 2
    assert label(probe) == "system_u:object_r:var_lib_t:s0"
    with pytest.raises(ValueError, match="kept as imported"):
        selinux_label(root, dep, ["/usr/bin"])
    probe.unlink()


def test_fstab_style(deployed: tuple[Path, Deployment, int]) -> None:
    _, dep, _ = deployed
    fstab = dep.path / "etc/fstab"
    before = fstab.read_text()
    try:
        write_mounts(dep, MOUNTS[:2], style="fstab")
        write_mounts(dep, MOUNTS[:2], style="fstab")  # idempotent: no duplicate lines
        lines = fstab.read_text().splitlines()
        assert lines[0] == "# static file system information"
        assert lines[1:] == [
            f"UUID={BOOT_UUID} /boot ext4 ro 0 0",
            "UUID=ABCD-1234 /boot/efi vfat umask=0077,shortname=winnt 0 0",
        ]
    finally:
        fstab.write_text(before)


def test_composefs_policy_of_the_deployment(deployed: tuple[Path, Deployment, int]) -> None:
    _, dep, _ = deployed
    decision = composefs_policy(dep.path)
    assert decision.kargs == ("ostree.prepare-root.composefs=0",)
    assert decision.reason is not None and "composefs" in decision.reason


def test_deploy_on_loop_mounted_ext4(source: tuple[Path, str], tmp_path: Path) -> None:
    repo, commit = source
    with deploy_tree.ext4_root_and_boot(tmp_path) as root:
        dep, labelled = _full_deploy(root, repo, commit)
        assert labelled > 20
        # the BLS entry and the kernel are on the /boot filesystem, the deployment on the root one
        boot_dev = (root / "boot").stat().st_dev
        assert dep.bls_entries[0].stat().st_dev == boot_dev
        assert dep.path.stat().st_dev == root.stat().st_dev != boot_dev
        assert label(dep.bls_entries[0]) == "system_u:object_r:boot_t:s0"
        assert label(dep.var / "log/app.log") == "system_u:object_r:var_log_t:s0"
        assert (dep.var / "lib/app/data").read_bytes() == b"state\n"
        assert (dep.path / "etc/systemd/system/local-fs.target.wants/boot.mount").is_symlink()
    assert not any(str(tmp_path) in line for line in Path("/proc/mounts").read_text().splitlines())


def test_refuses_the_host_filesystem(source: tuple[Path, str], tmp_path: Path) -> None:
    # tmp_path is on the host's root filesystem: ostree would freeze it.
    (tmp_path / "boot").mkdir()
    with pytest.raises(DeployError, match="host's root filesystem"):
        deploy(
            tmp_path, stateroot="default", commit=source[1], kargs=[], origin_ref=ORIGIN, source_digest=DIGEST
        )


def test_missing_ref_and_unbootable_commit(source: tuple[Path, str], tmp_path: Path) -> None:
    repo, commit = source
    deploy_tree.make_tree(tmp_path / "tree", os_release=False, selinux=False)
    bad = deploy_tree.commit_tree(repo, tmp_path / "tree", ref="imgbuild/test/no-os-release")
    with deploy_tree.tmpfs_root(tmp_path / "root") as root:
        init_sysroot(root)
        init_sysroot(root)  # idempotent
        with pytest.raises(DeployError, match="no ref ostree/container/image/missing"):
            pull_commit(repo, root, commit, refs=["ostree/container/image/missing"])
        with pytest.raises(DeployError, match="not in the sysroot repository"):
            deploy(root, stateroot="default", commit=bad, kargs=[], origin_ref=ORIGIN, source_digest=DIGEST)
        with pytest.raises(ImgbuildError, match="is not in"):
            commit_composefs_policy(root / "ostree/repo", bad)
        pull_commit(repo, root, bad)
        with pytest.raises(NotBootable, match="os-release") as info:
            deploy(
                root, stateroot="default", commit=bad, kargs=["rw"], origin_ref=ORIGIN, source_digest=DIGEST
            )
        assert isinstance(info.value, ImgbuildError) and info.value.hint
        # no policy in the image: nothing is labelled, nothing fails
        fake = Deployment(
            path=root / "ostree/deploy/default/deploy/x.0",
            stateroot="default",
            commit=bad,
            var=root / "ostree/deploy/default/var",
            bls_entries=(),
            kernel_version=KERNEL,
        )
        assert selinux_label(root, fake) == 0
