"""Hostile derived layers through `imgbuild import`: refused (exit 2, naming the layer and path) or
neutralised, and nothing is ever written outside the repository.

Each image is ostree-ext's example base layer plus the layers below, written by the tests.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder import run
from builder.ostree.gi import open_repo
from builder.ostree.refescape import image_ref
from tests.helpers_oci import BlobLayer, TarWriter, add_gzip_layer, write_oci_image

ROOT = Path(__file__).resolve().parents[2]
BASE_COMMIT = "3cb6170b6945065c2475bc16d7bebcc84f96b4c677811a6751e479b89f8c3770"
BASE_BLOB = "ee02768e65e6fb2bb7058282338896282910f3560de3e0d6cd9b1d5985e8360d"
BASE_DIFF_ID = "sha256:80fc1a6addf949e29daf08b85761c86f06d99d176dbb39605685bc570e886cff"
HOST_CANARY = Path("/etc/imgbuild-import-test-canary")


def snapshot(top: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    """Every path under `top` (outside `skip`) with its type and size, without following symlinks."""
    seen: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in dirnames + filenames:
            st = os.lstat(Path(dirpath, name))
            seen[str(Path(dirpath, name).relative_to(top))] = (stat.S_IFMT(st.st_mode), st.st_size)
    return seen


def make_image(tmp_path: Path, ostree_ext_fixtures: Path, layers: list[bytes]) -> tuple[str, list[str]]:
    layout = tmp_path / "oci"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    with tarfile.open(ostree_ext_fixtures / "exampleos-derive.ociarchive") as tf:
        member = tf.getmember(f"blobs/sha256/{BASE_BLOB}")
        f = tf.extractfile(member)
        assert f is not None
        (layout / "blobs" / "sha256" / BASE_BLOB).write_bytes(f.read())
    base = BlobLayer(f"sha256:{BASE_BLOB}", BASE_DIFF_ID, member.size)
    blobs = [add_gzip_layer(layout, tar) for tar in layers]
    write_oci_image(layout, [base, *blobs], {"ostree.commit": BASE_COMMIT}, created="2024-01-02T03:04:05Z")
    return f"oci:{layout}", [b.digest for b in blobs]


def do_import(tmp_path: Path, ref: str) -> run.Completed:
    return run.run(
        [sys.executable, "-m", "builder", "import", ref, "--repo", str(tmp_path / "repo")],
        check=False,
        cwd=ROOT,
        env={"IMGBUILD_CACHE": str(tmp_path / "cache")},
    )


def ostree(repo: Path, *args: str) -> str:
    return run.run(["ostree", f"--repo={repo}", *args]).out


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A directory beside the repository that layers try to reach; it must stay empty."""
    outside = tmp_path / "outside"
    outside.mkdir()
    assert not HOST_CANARY.exists()
    return outside


def _dotdot(outside: Path) -> list[bytes]:
    tw = TarWriter()
    tw.file("usr/../../../outside/escaped", b"x")
    return [tw.bytes()]


def _symlink_then_file(outside: Path) -> list[bytes]:
    tw = TarWriter()
    tw.link("usr/lib/evil", str(outside), symlink=True)
    tw.file("usr/lib/evil/escaped", b"x")
    return [tw.bytes()]


def _symlink_to_host_etc(outside: Path) -> list[bytes]:
    tw = TarWriter()
    tw.link("usr/etcx", "/etc", symlink=True)
    tw.file("usr/etcx/" + HOST_CANARY.name, b"x")
    return [tw.bytes()]


def _hardlink_outside(outside: Path) -> list[bytes]:
    tw = TarWriter()
    tw.link("usr/shadow", "/etc/shadow", symlink=False)
    return [tw.bytes()]


def _file_then_dir(outside: Path) -> list[bytes]:
    tw = TarWriter()
    tw.file("usr/lib/thing", b"x")
    tw.file("usr/lib/thing/below", b"x")
    return [tw.bytes()]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_file_then_dir, "below the file usr/lib/thing"),
        (_dotdot, "usr/../../../outside/escaped"),
        (_symlink_then_file, "usr/lib/evil/escaped"),
        (_symlink_to_host_etc, HOST_CANARY.name),
        (_hardlink_outside, "usr/shadow"),
    ],
)
def test_refused(
    tmp_path: Path,
    ostree_ext_fixtures: Path,
    sandbox: Path,
    build: Callable[[Path], list[bytes]],
    message: str,
) -> None:
    ref, digests = make_image(tmp_path, ostree_ext_fixtures, build(sandbox))
    before = snapshot(tmp_path, {tmp_path / "repo", tmp_path / "cache"})
    out = do_import(tmp_path, ref)
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert digests[0] in err and message in err and "Traceback" not in err
    assert snapshot(tmp_path, {tmp_path / "repo", tmp_path / "cache"}) == before
    assert list(sandbox.iterdir()) == [] and not HOST_CANARY.exists()
    refs = ostree(tmp_path / "repo", "refs")
    assert image_ref(ref) not in refs
    assert list((tmp_path / "repo" / "tmp").glob("layer-*")) == []


def test_symlink_from_earlier_layer_is_replaced_not_followed(
    tmp_path: Path, ostree_ext_fixtures: Path, sandbox: Path
) -> None:
    """Layer 1 makes usr/lib/evil a symlink out of the tree (and one to the host's /etc); layer 2 puts a
    directory with files there. As in a container, the directory replaces the symlink."""
    first = TarWriter()
    first.link("usr/lib/evil", str(sandbox), symlink=True)
    first.link("usr/etcx", "/etc", symlink=True)
    second = TarWriter()
    second.dir("usr/lib/evil/")
    second.file("usr/lib/evil/escaped", b"x")
    second.dir("usr/etcx/")
    second.file("usr/etcx/" + HOST_CANARY.name, b"x")
    ref, _ = make_image(tmp_path, ostree_ext_fixtures, [first.bytes(), second.bytes()])
    out = do_import(tmp_path, ref)
    assert out.returncode == 0, out.stderr.decode()
    assert list(sandbox.iterdir()) == [] and not HOST_CANARY.exists()
    listing = ostree(tmp_path / "repo", "ls", "-R", out.out.strip(), "/usr")
    assert "d00755 0 0      0 /usr/lib/evil\n" in listing
    assert "/usr/lib/evil/escaped" in listing and f"/usr/etcx/{HOST_CANARY.name}" in listing


def test_devices_fifos_and_outside_paths_neutralised(
    tmp_path: Path, ostree_ext_fixtures: Path, sandbox: Path
) -> None:
    tw = TarWriter()
    tw.special("dev/sda", tarfile.BLKTYPE)
    tw.special("usr/lib/null", tarfile.CHRTYPE)
    tw.special("usr/lib/fifo", tarfile.FIFOTYPE)
    tw.file("opt/app/bin", b"x")
    tw.file("boot/vmlinuz-evil", b"x")
    tw.file("etc/app.conf", b"conf")
    tw.file("var/lib/app/db", b"db")
    tw.dir("tmp/")
    tw.file("tmp/junk", b"x")
    tw.file("usr/share/.wh.anewfile", b"")  # a whiteout of the base's... nothing: harmless
    ref, digests = make_image(tmp_path, ostree_ext_fixtures, [tw.bytes()])
    out = do_import(tmp_path, ref)
    assert out.returncode == 0, out.stderr.decode()
    merged = out.out.strip()
    repo = tmp_path / "repo"
    listing = ostree(repo, "ls", "-R", merged)
    for gone in ("sda", "null", "fifo", "/opt", "/boot", "junk", ".wh."):
        assert gone not in listing
    assert "/usr/etc/app.conf" in listing
    assert "/usr/share/factory/var/lib/app/db" in listing
    assert "/tmp\n" in listing
    # Read through libostree: `ostree show` byte-swaps metadata values on little-endian hosts.
    _, commitv, _ = open_repo(repo).load_commit(merged)
    filtered = commitv.get_child_value(0).lookup_value("ostree.tar-filtered", None)
    assert filtered.get_type_string() == "a{sa{su}}"
    assert filtered.unpack() == {digests[0]: {"opt": 1, "boot": 1, "tmp": 1}}
    # No device node or fifo was created anywhere.
    for dirpath, _, filenames in os.walk(tmp_path):
        for name in filenames:
            mode = os.lstat(Path(dirpath, name)).st_mode
            assert not (stat.S_ISBLK(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)), name
    assert list(sandbox.iterdir()) == []
    ostree(repo, "fsck")
    # Importing again reuses the layer and writes the same merge commit (the counts were kept).
    again = do_import(tmp_path, ref)
    assert again.returncode == 0, again.stderr.decode()
    assert "imported 0 layer(s), reused 2" in again.stderr.decode()
    assert again.out.strip() == merged


def test_whiteouts_applied_in_merge(tmp_path: Path, ostree_ext_fixtures: Path) -> None:
    first = TarWriter()
    first.file("usr/share/doc/a", b"a")
    first.file("usr/share/doc/b", b"b")
    second = TarWriter()
    second.file("usr/bin/.wh.foo", b"")  # removes the base's /usr/bin/foo
    second.file("usr/share/doc/.wh..wh..opq", b"")  # empties the directory of the earlier layer
    second.file("usr/share/doc/c", b"c")
    ref, _ = make_image(tmp_path, ostree_ext_fixtures, [first.bytes(), second.bytes()])
    out = do_import(tmp_path, ref)
    assert out.returncode == 0, out.stderr.decode()
    listing = ostree(tmp_path / "repo", "ls", "-R", out.out.strip())
    assert "/usr/bin/foo" not in listing and "/usr/bin/bash" in listing
    assert "/usr/share/doc/c" in listing
    assert "/usr/share/doc/a" not in listing and "/usr/share/doc/b" not in listing
    assert ".wh." not in listing
    shutil.rmtree(tmp_path / "oci")


def test_image_without_ostree_base(tmp_path: Path) -> None:
    """A bootc image with no ostree commit: every layer is derived, top levels other than usr are kept."""
    tw = TarWriter()
    tw.file("usr/bin/app", b"#!/bin/sh\n", 0o755)
    tw.file("etc/os-release", b"ID=plain\n")
    tw.file("opt/vendor/tool", b"x")
    tw.dir("proc/")
    tw.file("proc/cpuinfo", b"x")
    layout = tmp_path / "oci"
    write_oci_image(layout, [add_gzip_layer(layout, tw.bytes())], {}, created="2024-01-02T03:04:05Z")
    out = do_import(tmp_path, f"oci:{layout}")
    assert out.returncode == 0, out.stderr.decode()
    assert "base none" in out.stderr.decode()
    listing = ostree(tmp_path / "repo", "ls", "-R", out.out.strip())
    for path in ("/usr/bin/app", "/usr/etc/os-release", "/opt/vendor/tool", "/proc\n"):
        assert path in listing
    assert "cpuinfo" not in listing
    ostree(tmp_path / "repo", "fsck")
