"""`imgbuild import` end to end: the real CLI, skopeo, libostree, the ostree CLI.

- ostree-ext's own images (v0 layout) import to their `ostree.commit`; updates reuse the base layer;
- images encapsulated from our own commits (chunked v1) round-trip to the same commit;
- a corrupted blob fails with the layer's digest and leaves no ref;
- SIGINT in the middle of a layer leaves no ref and a repository that fscks clean.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from builder import run
from builder.ostree.encapsulate import encapsulate
from builder.ostree.gi import GLib, OSTree, create_repo, open_repo
from builder.ostree.refescape import image_ref, layer_ref
from tests.helpers_oci import TarWriter, add_gzip_layer, v1_layers_from_commit, write_oci_image

ROOT = Path(__file__).resolve().parents[2]
BASE_COMMIT = "3cb6170b6945065c2475bc16d7bebcc84f96b4c677811a6751e479b89f8c3770"
BASE_LAYER = "sha256:ee02768e65e6fb2bb7058282338896282910f3560de3e0d6cd9b1d5985e8360d"


def imgbuild_import(ref: str, repo: Path, cache: Path) -> run.Completed:
    return run.run(
        [sys.executable, "-m", "builder", "import", ref, "--repo", str(repo)],
        check=False,
        cwd=ROOT,
        env={"IMGBUILD_CACHE": str(cache)},
    )


def ostree(repo: Path, *args: str) -> str:
    return run.run(["ostree", f"--repo={repo}", *args]).out


def test_fixtures_import_and_update(tmp_path: Path, ostree_ext_fixtures: Path) -> None:
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    v1 = f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive.ociarchive'}"
    v2 = f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive-v2.ociarchive'}"

    first = imgbuild_import(v1, repo, cache)
    assert first.returncode == 0, first.stderr.decode()
    merged1 = first.out.strip()
    assert ostree(repo, "rev-parse", layer_ref(BASE_LAYER)).strip() == BASE_COMMIT
    assert ostree(repo, "rev-parse", image_ref(v1)).strip() == merged1
    assert "imported 2 layer(s), reused 0" in first.stderr.decode()
    assert "/usr/share/anewfile" in ostree(repo, "ls", "-R", merged1, "/usr/share")
    # The merge keeps the base commit's own SELinux labels and metadata.
    assert "shell_exec_t" in ostree(repo, "ls", "-X", merged1, "/usr/bin/bash")
    assert "sha256:7477731e" in ostree(repo, "show", "--print-metadata-key=ostree.manifest-digest", merged1)

    second = imgbuild_import(v2, repo, cache)
    assert second.returncode == 0, second.stderr.decode()
    assert "imported 1 layer(s), reused 1" in second.stderr.decode()
    assert f"reused   {BASE_LAYER}" in second.stderr.decode()
    listing = ostree(repo, "ls", "-R", second.out.strip(), "/usr/share")
    assert "/usr/share/anewfile2" in listing and "/usr/share/anewfile\n" not in listing
    ostree(repo, "fsck")
    assert [p.name for p in (repo / "state").iterdir()] == []  # no commit left marked partial


def _own_tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib/modules/6.1.0-test").mkdir(parents=True)
    (root / "usr/share/data").mkdir(parents=True)
    (root / "usr/etc").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (root / "usr/bin/tool").chmod(0o4755)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-link")
    (root / "usr/bin/sh").symlink_to("tool")
    (root / "usr/lib/modules/6.1.0-test/vmlinuz").write_bytes(os.urandom(2 * 1024 * 1024))
    (root / "usr/lib/modules/6.1.0-test/initramfs.img").write_bytes(b"initramfs" * 50000)
    (root / "usr/etc/os-release").write_text("ID=imgbuildtest\nVERSION_ID=1\n")
    os.setxattr(root / "usr/etc/os-release", "user.test", b"\x00\x01binary")
    for i in range(200):
        (root / f"usr/share/data/f{i:03}").write_bytes(os.urandom(i * 37))
    os.chown(root / "usr/share/data/f001", 1000, 1000)
    return root


@pytest.mark.parametrize("mode", ["bare", "bare-user"])
def test_encapsulated_round_trip(tmp_path: Path, mode: str) -> None:
    src = tmp_path / "src"
    run.run(["ostree", "init", f"--repo={src}", "--mode=bare"])
    commit = run.run(
        [
            "ostree",
            "commit",
            f"--repo={src}",
            "--branch=test/os",
            f"--tree=dir={_own_tree(tmp_path / 'tree')}",
            "--add-metadata-string=version=7.1",
        ]
    ).out.strip()
    archive = tmp_path / "os.ociarchive"
    result = encapsulate(src, "test/os", f"oci-archive:{archive}:latest", max_layers=6)
    assert len(result.layers) > 2

    repo = tmp_path / "repo"
    create_repo(repo, OSTree.RepoMode.BARE if mode == "bare" else OSTree.RepoMode.BARE_USER)
    out = imgbuild_import(f"oci-archive:{archive}:latest", repo, tmp_path / "cache")
    assert out.returncode == 0, out.stderr.decode()
    merged = out.out.strip()
    for layer in result.layers:
        assert ostree(repo, "rev-parse", layer_ref(layer.digest))
    assert ostree(repo, "rev-parse", layer_ref(result.layers[0].digest)).strip() == commit
    assert ostree(repo, "diff", commit, merged) == ""
    assert ostree(repo, "ls", "-X", merged, "/usr/etc/os-release") == ostree(
        src, "ls", "-X", commit, "/usr/etc/os-release"
    )
    assert "version: 7.1" in ostree(repo, "show", merged).lower()
    ostree(repo, "fsck")


def test_corrupt_blob(tmp_path: Path, ostree_ext_fixtures: Path) -> None:
    layout = tmp_path / "oci"
    layout.mkdir()
    with tarfile.open(ostree_ext_fixtures / "exampleos-derive.ociarchive") as tf:
        tf.extractall(layout)  # a trusted fixture
    blob = layout / "blobs" / "sha256" / BASE_LAYER.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    repo = tmp_path / "repo"
    out = imgbuild_import(f"oci:{layout}", repo, tmp_path / "cache")
    assert out.returncode == 2, out.stderr.decode()
    err = out.stderr.decode()
    assert BASE_LAYER.split(":")[1][:12] in err
    assert "Traceback" not in err
    refs = ostree(repo, "refs") if (repo / "config").exists() else ""
    assert refs == ""


def test_sigint_mid_layer(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree = tmp_path / "tree" / "usr" / "lib"
    tree.mkdir(parents=True)
    with open(tree / "big", "wb") as f:
        for _ in range(256):
            f.write(b"imgbuild" * 131072)  # 256 MiB that compress well: the blob stays small
    run.run(["ostree", "init", f"--repo={src}", "--mode=bare"])
    run.run(["ostree", "commit", f"--repo={src}", "--branch=big", f"--tree=dir={tmp_path / 'tree'}"])
    shutil.rmtree(tmp_path / "tree")
    encapsulate(src, "big", f"oci:{tmp_path / 'oci'}:big", max_layers=2)

    repo = tmp_path / "repo"
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "builder", "import", f"oci:{tmp_path / 'oci'}:big", "--repo", str(repo)]
    with run.spawn(argv, cwd=ROOT, env={"IMGBUILD_CACHE": str(cache)}, check=False) as proc:
        deadline = time.monotonic() + 60
        # libostree stages its writes in tmp/staging-*, imgbuild's own object writer in tmp/imgbuild-staging-*
        while not list((repo / "tmp").glob("*staging-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the import ended before it could be interrupted"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    assert rc == 130
    assert ostree(repo, "refs") == ""
    assert [p.name for p in (repo / "state").iterdir()] == []
    ostree(repo, "fsck")
    # And the next attempt completes.
    again = imgbuild_import(f"oci:{tmp_path / 'oci'}:big", repo, cache)
    assert again.returncode == 0, again.stderr.decode()
    ostree(repo, "fsck")


FILE_CONTEXTS = """/\tsystem_u:object_r:root_t:s0
/usr(/.*)?\tsystem_u:object_r:usr_t:s0
/usr/bin(/.*)?\tsystem_u:object_r:bin_t:s0
/usr/share/newfile\tsystem_u:object_r:imgbuild_new_t:s0
"""


def _labelled_base_tar() -> bytes:
    """A tree carrying a (minimal, text) SELinux policy, its files labelled `custom_t`, not as the
    policy says."""
    tw = TarWriter()
    files = {
        "usr/etc/selinux/config": b"SELINUX=enforcing\nSELINUXTYPE=targeted\n",
        "usr/etc/selinux/targeted/contexts/files/file_contexts": FILE_CONTEXTS.encode(),
        "usr/etc/selinux/targeted/policy/policy.33": b"not a real policy: only file_contexts is read",
        "usr/bin/tool": b"#!/bin/sh\n",
    }
    for name, data in files.items():
        info = tarfile.TarInfo(name)
        info.mode = 0o755
        info.pax_headers = {"SCHILY.xattr.security.selinux": "system_u:object_r:custom_t:s0\x00"}
        tw.add(info, data)
    return tw.bytes()


def test_selinux_labels(tmp_path: Path) -> None:
    """Without derived layers the commit's own labels stay; with one, everything is relabelled from the
    merged tree's policy, including the files the layer added."""
    src = tmp_path / "src"
    run.run(["ostree", "init", f"--repo={src}", "--mode=bare"])
    (tmp_path / "base.tar").write_bytes(_labelled_base_tar())
    commit = run.run(
        [
            "ostree",
            "commit",
            f"--repo={src}",
            "--branch=base",
            "--tar-autocreate-parents",
            f"--tree=tar={tmp_path / 'base.tar'}",
        ]
    ).out.strip()
    base_layers = [add_gzip_layer(tmp_path / "plain", t) for t in v1_layers_from_commit(src, commit, 1)]
    labels = {"ostree.commit": commit, "ostree.final-diffid": base_layers[-1].diff_id}
    write_oci_image(tmp_path / "plain", base_layers, labels)

    derived = TarWriter()
    derived.file("usr/share/newfile", b"new")
    for blob in base_layers:
        digest = blob.digest.split(":")[1]
        (tmp_path / "derived" / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "plain" / "blobs" / "sha256" / digest, tmp_path / "derived/blobs/sha256")
    write_oci_image(
        tmp_path / "derived", [*base_layers, add_gzip_layer(tmp_path / "derived", derived.bytes())], labels
    )

    repo, cache = tmp_path / "repo", tmp_path / "cache"
    plain = imgbuild_import(f"oci:{tmp_path / 'plain'}", repo, cache)
    assert plain.returncode == 0, plain.stderr.decode()
    assert "custom_t" in ostree(repo, "ls", "-X", plain.out.strip(), "/usr/bin/tool")

    relabelled = imgbuild_import(f"oci:{tmp_path / 'derived'}", repo, cache)
    assert relabelled.returncode == 0, relabelled.stderr.decode()
    merged = relabelled.out.strip()
    assert "bin_t" in ostree(repo, "ls", "-X", merged, "/usr/bin/tool")
    assert "imgbuild_new_t" in ostree(repo, "ls", "-X", merged, "/usr/share/newfile")
    assert "root_t" in ostree(repo, "ls", "-X", "-d", merged, "/")
    ostree(repo, "fsck")


def test_bare_user_merge_equals_bare(tmp_path: Path, ostree_ext_fixtures: Path) -> None:
    """A bare-user checkout cannot carry xattrs on symlinks and directories; the merge takes them from the
    commits, so both repository modes write the same merge commit."""
    ref = f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive.ociarchive'}"
    merged = {}
    for mode in (OSTree.RepoMode.BARE, OSTree.RepoMode.BARE_USER):
        repo = tmp_path / f"repo-{int(mode)}"
        create_repo(repo, mode)
        out = imgbuild_import(ref, repo, tmp_path / "cache")
        assert out.returncode == 0, out.stderr.decode()
        merged[mode] = out.out.strip()
        assert "bin_t" in ostree(repo, "ls", "-X", merged[mode], "/usr/bin/sh")
        ostree(repo, "fsck")
    assert merged[OSTree.RepoMode.BARE] == merged[OSTree.RepoMode.BARE_USER]

    # Unprivileged (the repository is created bare-user), the result is the same commit.
    with tempfile.TemporaryDirectory(prefix="imgbuild-unpriv-") as scratch:
        Path(scratch).chmod(0o777)
        argv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "builder",
        ]
        out = run.run(
            [*argv, "import", ref, "--repo", f"{scratch}/repo"],
            check=False,
            cwd=ROOT,
            env={"IMGBUILD_CACHE": f"{scratch}/cache", "HOME": scratch},
        )
        assert out.returncode == 0, out.stderr.decode()
        assert out.out.strip() == merged[OSTree.RepoMode.BARE]
        assert "mode=bare-user" in Path(scratch, "repo", "config").read_text()


def test_detached_metadata_round_trip(tmp_path: Path) -> None:
    """A commit's detached metadata (where signatures live) travels in the commit layer and is restored."""
    src = tmp_path / "src"
    run.run(["ostree", "init", f"--repo={src}", "--mode=bare"])
    commit = run.run(
        ["ostree", "commit", f"--repo={src}", "--branch=os", f"--tree=dir={_own_tree(tmp_path / 'tree')}"]
    ).out.strip()
    detached = GLib.Variant("a{sv}", {"imgbuild.test": GLib.Variant("s", "signed, sort of")})
    open_repo(src).write_commit_detached_metadata(commit, detached, None)
    encapsulate(src, "os", f"oci:{tmp_path / 'oci'}:os", max_layers=3)
    repo = tmp_path / "repo"
    out = imgbuild_import(f"oci:{tmp_path / 'oci'}:os", repo, tmp_path / "cache")
    assert out.returncode == 0, out.stderr.decode()
    _, restored = open_repo(repo).read_commit_detached_metadata(commit, None)
    assert restored is not None and restored.lookup_value("imgbuild.test", None).unpack() == "signed, sort of"
    ostree(repo, "fsck")
