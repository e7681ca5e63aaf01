"""An image that carries an SELinux policy and enables composefs: a copy of the example with a small
file_contexts and a prepare-root.conf added. The files the build creates outside the commit get the labels
that policy gives them, the commit's own files keep theirs, and the plan says what it does about composefs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder import run
from builder.devices import loop_device, mounted
from builder.example import ExampleImage
from builder.ostree.encapsulate import encapsulate
from tests.imagebuilds import ImageBuilds, partitions, raw_copy

FILE_CONTEXTS = """\
/                            system_u:object_r:root_t:s0
/.*                          system_u:object_r:default_t:s0
/etc(/.*)?                   system_u:object_r:etc_t:s0
/etc/hostname                system_u:object_r:hostname_etc_t:s0
/etc/systemd/system(/.*)?    system_u:object_r:systemd_unit_file_t:s0
/var(/.*)?                   system_u:object_r:var_t:s0
/var/log(/.*)?               system_u:object_r:var_log_t:s0
/boot(/.*)?                  system_u:object_r:boot_t:s0
"""


@pytest.fixture(scope="module")
def selinux_image(example_x86_64: ExampleImage, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("selinux-image")
    repo = work / "repo"
    run.run(["ostree", "init", f"--repo={repo}", "--mode=bare-user"])
    run.run(["ostree", f"--repo={repo}", "pull-local", example_x86_64.repo, example_x86_64.ref])
    extra = work / "extra"
    policy = extra / "usr/etc/selinux/imgbuildtest/contexts/files"
    policy.mkdir(parents=True)
    (policy / "file_contexts").write_text(FILE_CONTEXTS)
    # ostree checksums the binary policy directory; no program here loads the policy itself.
    (extra / "usr/etc/selinux/imgbuildtest/policy").mkdir()
    (extra / "usr/etc/selinux/imgbuildtest/policy/policy.33").write_bytes(b"imgbuild test policy\n")
    (extra / "usr/etc/selinux/config").write_text("SELINUX=permissive\nSELINUXTYPE=imgbuildtest\n")
    (extra / "usr/lib/ostree").mkdir(parents=True)
    (extra / "usr/lib/ostree/prepare-root.conf").write_text("[composefs]\nenabled = yes\n")
    run.run(
        [
            "ostree",
            f"--repo={repo}",
            "commit",
            "--branch=test/selinux",
            f"--tree=ref={example_x86_64.ref}",
            f"--tree=dir={extra}",
            "--owner-uid=0",
            "--owner-gid=0",
            "--no-bindings",
            "--add-metadata=ostree.bootable=true",
            f"--add-metadata-string=ostree.linux={example_x86_64.kernel}",
            "--add-metadata-string=version=selinux-test",
        ]
    )
    archive = work / "selinux.ociarchive"
    return encapsulate(repo, "test/selinux", f"oci-archive:{archive}:latest").reference


def _label(path: Path) -> str:
    return os.getxattr(path, "security.selinux", follow_symlinks=False).rstrip(b"\0").decode()


def test_build_labels_and_composefs(selinux_image: str, images: ImageBuilds, tmp_path: Path) -> None:
    built = images.get(
        "raw", selinux_image, "--blueprint", str(Path(__file__).parents[1] / "data/hostname.toml")
    )
    deploy = built.stage_options("ostree.deploy")
    assert "ostree.prepare-root.composefs=0" in deploy["kernel_args"]
    assert any("composefs" in note for note in deploy["notes"])
    assert built.stage_options("ostree.selinux")["policy"] == "imgbuildtest"
    commit = built.result["commit"]
    with raw_copy(built.image, tmp_path) as raw:
        parts = {p.name: p for p in partitions(raw)}
        (tmp_path / "root").mkdir()
        root, boot = parts["root"], parts["boot"]
        with (
            loop_device(raw, offset=root.start, size=root.size, read_only=True) as rdev,
            loop_device(raw, offset=boot.start, size=boot.size, read_only=True) as bdev,
            mounted(rdev, tmp_path / "root", fstype="ext4", options=["ro"]) as mnt,
            mounted(bdev, mnt / "boot", fstype="ext4", options=["ro"]),
        ):
            dep = mnt / "ostree/deploy/default/deploy" / f"{commit}.0"
            var = mnt / "ostree/deploy/default/var"
            assert _label(dep / "etc/hostname") == "system_u:object_r:hostname_etc_t:s0"
            assert _label(dep / "etc/systemd/system/boot.mount") == "system_u:object_r:systemd_unit_file_t:s0"
            assert _label(dep / "etc/passwd") == "system_u:object_r:etc_t:s0"
            assert _label(var / "log") == "system_u:object_r:var_log_t:s0"
            assert _label(var / "home") == "system_u:object_r:var_t:s0"
            entries = list((mnt / "boot/loader/entries").glob("*.conf"))
            assert entries and _label(entries[0]) == "system_u:object_r:boot_t:s0"
            # The commit's own files are kept as imported: the example's /usr carries no labels.
            with pytest.raises(OSError):
                _label(dep / "usr/bin/sh")
