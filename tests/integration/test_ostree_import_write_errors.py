"""Object writes that the kernel refuses fail the import at once, naming the object and the cause; and the
objects the importer writes itself (loose.py) are byte for byte what libostree writes.

Root: a `bare` repository applies each object's owner and extended attributes to the file, which is where
the kernel can refuse them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from builder import run
from builder.errors import ImportFailure
from builder.ostree.encapsulate import encapsulate
from builder.ostree.gi import Gio, GLib, OSTree, create_repo
from builder.ostree.importer import import_image
from tests.helpers_oci import add_gzip_layer, image_from_oci_dir, v1_layers_from_commit, write_oci_image

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a bare repository)")

# No kernel knows this namespace: setxattr fails with EOPNOTSUPP whoever asks.
BOGUS_XATTR = b"bogus.imgbuild-test\0"


def _tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/share/data").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (root / "usr/bin/tool").chmod(0o4755)
    (root / "usr/bin/sh").symlink_to("tool")
    (root / "usr/share/data/big").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "usr/share/data/victim").write_bytes(b"a file the kernel will not take as it is\n")
    for i in range(50):
        (root / f"usr/share/data/f{i:02}").write_bytes(os.urandom(i * 101))
    return root


def _commit(repo_path: Path, tree: Path, extra_xattrs: dict[str, list[tuple[bytes, bytes]]]) -> str:
    """Commit `tree` through libostree (which computes every checksum), adding xattrs to some paths."""
    repo = create_repo(repo_path, OSTree.RepoMode.BARE_USER)  # xattrs live in user.ostreemeta here

    def xattrs(_repo: Any, path: str, _info: Any, *_user: Any) -> Any:
        return GLib.Variant("a(ayay)", extra_xattrs.get(path, []))

    modifier = OSTree.RepoCommitModifier.new(OSTree.RepoCommitModifierFlags.NONE, None)
    modifier.set_xattr_callback(xattrs)
    repo.prepare_transaction(None)
    mtree = OSTree.MutableTree.new()
    repo.write_directory_to_mtree(Gio.File.new_for_path(str(tree)), mtree, modifier, None)
    _, root = repo.write_mtree(mtree, None)
    _, commit = repo.write_commit(None, "test", None, None, root, None)
    repo.transaction_set_ref(None, "test/os", commit)
    repo.commit_transaction(None)
    return str(commit)


def _image(tmp_path: Path, src: Path, commit: str, chunks: int) -> Path:
    layout = tmp_path / "oci"
    blobs = [add_gzip_layer(layout, tar) for tar in v1_layers_from_commit(src, commit, chunks)]
    labels = {"ostree.commit": commit, "ostree.final-diffid": blobs[-1].diff_id, "ostree.bootable": "true"}
    return write_oci_image(layout, blobs, labels)


def _object_checksum(repo: Path, commit: str, path: str) -> str:
    return run.run(["ostree", f"--repo={repo}", "ls", "-C", commit, path]).out.split()[-2]


def test_xattr_the_kernel_refuses_fails_at_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    commit = _commit(src, _tree(tmp_path / "tree"), {"/usr/share/data/victim": [(BOGUS_XATTR, b"value")]})
    victim = _object_checksum(src, commit, "/usr/share/data/victim")
    # imgbuild's own exporter: its layers carry the checkout paths (hardlinks to the objects) too.
    encapsulate(src, "test/os", f"oci:{tmp_path / 'oci'}:latest", max_layers=3)
    image = image_from_oci_dir(tmp_path / "oci")
    repo = tmp_path / "repo"
    create_repo(repo, OSTree.RepoMode.BARE)
    with pytest.raises(ImportFailure) as info:
        import_image(image, repo, imgref="docker://registry.invalid/test/os:1")
    message = info.value.message
    # Named: the object, its file, the attribute, and the kernel's reason; not a later "references
    # objects" error.
    assert victim in message, message
    assert "/usr/share/data/victim" in message, message
    assert "bogus.imgbuild-test" in message and "Operation not supported" in message, message
    assert "references objects" not in message
    assert info.value.hint is not None and "filesystem of the ostree repository refused" in info.value.hint
    # Nothing half-written: no image ref, no ref for the failed layer (layers imported before it keep
    # theirs, for reuse), no staging directory, no partial marker; the repository is sound.
    refs = run.run(["ostree", f"--repo={repo}", "refs"]).out.split()
    assert not [r for r in refs if r.startswith("ostree/container/image/")]
    assert len(refs) < len(image.layers)
    assert [p.name for p in (repo / "tmp").iterdir() if p.name.startswith("imgbuild-staging-")] == []
    assert list((repo / "state").iterdir()) == []
    run.run(["ostree", f"--repo={repo}", "fsck"])


def test_full_filesystem_fails_naming_the_cause(tmp_path: Path) -> None:
    """A target that refuses writes: the import stops with the reason, not with a missing-object error."""
    src = tmp_path / "src"
    commit = _commit(src, _tree(tmp_path / "tree"), {})
    image = image_from_oci_dir(_image(tmp_path, src, commit, chunks=0))
    mnt = tmp_path / "small"
    mnt.mkdir()
    run.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)])  # the image needs 3 MiB and more
    try:
        repo = mnt / "repo"
        create_repo(repo, OSTree.RepoMode.BARE)
        with pytest.raises(ImportFailure) as info:
            import_image(image, repo, imgref="docker://registry.invalid/test/os:1")
        message = info.value.message
        # ENOSPC, or libostree's own reserve (min-free-space) when its write comes first.
        assert "No space left on device" in message or "min-free-space" in message, message
        assert "object " in message, message
        assert not [r for r in run.run(["ostree", f"--repo={repo}", "refs"]).out.split() if "/image/" in r]
        assert [p.name for p in (repo / "tmp").iterdir() if p.name.startswith("imgbuild-staging-")] == []
    finally:
        run.run(["umount", "--lazy", str(mnt)])  # the repository object may still hold it


@pytest.mark.parametrize("mode", [OSTree.RepoMode.BARE, OSTree.RepoMode.BARE_USER])
def test_objects_are_what_libostree_writes(tmp_path: Path, mode: Any) -> None:
    """Every regular-file object the importer wrote has the owner, mode, xattrs, mtime and content that
    libostree gives the same object (pull-local of the commit into a second repository)."""
    src = tmp_path / "src"
    commit = _commit(
        src,
        _tree(tmp_path / "tree"),
        # Sorted by name, as ostree keeps them (fsck compares with what it reads back).
        {"/usr/bin/tool": [(b"trusted.imgbuild\0", b"x"), (b"user.test\0", b"\x00\x01binary")]},
    )
    image = image_from_oci_dir(_image(tmp_path, src, commit, chunks=1))
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    create_repo(ours, mode)
    create_repo(theirs, mode)
    import_image(image, ours, imgref="docker://registry.invalid/test/os:1")
    run.run(["ostree", f"--repo={theirs}", "pull-local", str(src), commit])
    compared = 0
    for path in sorted((theirs / "objects").glob("*/*.file")):
        mine = ours / "objects" / path.parent.name / path.name
        a, b = os.lstat(mine), os.lstat(path)
        assert (a.st_mode, a.st_uid, a.st_gid, a.st_size) == (b.st_mode, b.st_uid, b.st_gid, b.st_size)
        if not path.is_symlink():  # libostree writes symlinks in both, and leaves their mtime alone
            assert a.st_mtime == b.st_mtime == 0, path.name
        names = sorted(os.listxattr(mine, follow_symlinks=False))
        assert names == sorted(os.listxattr(path, follow_symlinks=False)), path.name
        for name in names:
            assert os.getxattr(mine, name, follow_symlinks=False) == os.getxattr(
                path, name, follow_symlinks=False
            )
        if not path.is_symlink():
            assert mine.read_bytes() == path.read_bytes()
        compared += 1
    assert compared > 50
    run.run(["ostree", f"--repo={ours}", "fsck"])
