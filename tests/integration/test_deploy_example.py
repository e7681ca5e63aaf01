"""Deploying the real example OS (Debian 12 ostree system, builder.example) onto loop-mounted ext4.

The example is built here (or reused from its cache) through builder.example.build_example().
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from builder.arch import Arch
from builder.example import build_example
from builder.ostree.deploy import (
    ALEPH_NAME,
    MountSpec,
    commit_composefs_policy,
    deploy,
    init_sysroot,
    pull_commit,
    seed_var,
    selinux_label,
    write_mounts,
)
from tests.integration.deploy_tree import ext4_root_and_boot

ORIGIN = "ostree-unverified-image:oci-archive:/images/debian-ostree.ociarchive:latest"
BOOT_UUID = "7e57b007-0000-4000-8000-000000000002"


def test_deploy_the_example_os(tmp_path: Path) -> None:
    example = build_example(Arch.X86_64)
    composefs = commit_composefs_policy(example.repo, example.commit)
    assert composefs.kargs == ()  # Debian's ostree 2022.7 in the image: no composefs
    kargs = ["root=UUID=7e57b007-0000-4000-8000-000000000001", "rw", "console=ttyS0,115200"]
    with ext4_root_and_boot(tmp_path, root_mib=3072, boot_mib=512) as root:
        init_sysroot(root, stateroot="default")
        pull_commit(example.repo, root, example.commit, refs=[example.ref])
        dep = deploy(
            root,
            stateroot="default",
            commit=example.commit,
            kargs=kargs,
            origin_ref=ORIGIN,
            source_digest="sha256:" + "00" * 32,
        )
        seed_var(dep)
        write_mounts(dep, [MountSpec("/boot", BOOT_UUID, "ext4", "ro")])
        labelled = selinux_label(root, dep)

        assert dep.kernel_version == example.kernel
        entry = dep.bls_entries[0].read_text()
        title = entry.splitlines()[0]
        assert title.startswith("title Debian GNU/Linux 12 (bookworm)") and title.endswith("(ostree:0)")
        assert f"options {' '.join(kargs)} ostree=/ostree/boot.1/default/" in entry
        assert (root / "boot/ostree").is_dir()
        assert f"container-image-reference={ORIGIN}" in Path(f"{dep.path}.origin").read_text()
        assert json.loads((root / ALEPH_NAME).read_text())["kernel"] == example.kernel
        # /var as the example's tmpfiles.d and factory describe it
        var = dep.var
        assert (var / "lib/dpkg").readlink() == Path("/usr/lib/sysimage/dpkg")
        assert (var / "cache/debconf/config.dat").is_file()
        assert stat.S_IMODE((var / "roothome").stat().st_mode) == 0o700
        for d in ("home", "opt", "srv", "mnt", "usrlocal/bin"):
            assert (var / d).is_dir(), d
        local = (var / "local").stat()
        assert (local.st_gid, stat.S_IMODE(local.st_mode)) == (50, 0o2775)
        assert (dep.path / "etc/systemd/system/local-fs.target.wants/boot.mount").is_symlink()
        assert labelled == 0  # the example carries no SELinux policy
