"""Reading ostree-ext layer tars (v0 and v1) into a repository through libostree; transactions and refs."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from builder import run
from builder.errors import ImgbuildError, ImportFailure
from builder.ostree.gi import OSTree, create_repo
from builder.ostree.importer import import_image
from builder.ostree.refescape import image_ref, layer_ref
from builder.ostree.tarimport import import_layer_objects, transaction
from builder.source.image import Layout
from tests.helpers_oci import (
    TarWriter,
    add_gzip_layer,
    image_from_oci_dir,
    make_test_commit,
    v1_layers_from_commit,
    write_oci_image,
)

BASE_COMMIT = "3cb6170b6945065c2475bc16d7bebcc84f96b4c677811a6751e479b89f8c3770"
V0_LAYER = "ee02768e65e6fb2bb7058282338896282910f3560de3e0d6cd9b1d5985e8360d"


@pytest.fixture
def fixture_layer(ostree_ext_fixtures: Path) -> bytes:
    with tarfile.open(ostree_ext_fixtures / "exampleos-derive.ociarchive") as tf:
        f = tf.extractfile(f"blobs/sha256/{V0_LAYER}")
        assert f is not None
        return gzip.decompress(f.read())


def new_repo(path: Path) -> Any:
    return create_repo(path, OSTree.RepoMode.BARE_USER)


def fsck(repo: Path) -> None:
    run.run(["ostree", f"--repo={repo}", "fsck"])


def refs(repo: Path) -> list[str]:
    return run.run(["ostree", f"--repo={repo}", "refs"]).out.split()


def test_v0_commit_layer(tmp_path: Path, fixture_layer: bytes) -> None:
    repo = new_repo(tmp_path / "repo")
    with transaction(repo):
        stats = import_layer_objects(
            repo, io.BytesIO(fixture_layer), layer="l0", commit_layer=True, expected_commit=BASE_COMMIT
        )
    assert stats.commit == BASE_COMMIT
    assert stats.written == 6
    repo.mark_commit_partial(BASE_COMMIT, False)
    fsck(tmp_path / "repo")
    # SELinux labels came from the v0 xattrs links.
    out = run.run(["ostree", f"--repo={tmp_path / 'repo'}", "ls", "-X", BASE_COMMIT, "/usr/bin/bash"]).out
    assert "shell_exec_t" in out


def test_wrong_commit_refused(tmp_path: Path, fixture_layer: bytes) -> None:
    repo = new_repo(tmp_path / "repo")
    with pytest.raises(ImportFailure, match=r"not the image's ostree\.commit"), transaction(repo):
        import_layer_objects(
            repo, io.BytesIO(fixture_layer), layer="l0", commit_layer=True, expected_commit="0" * 64
        )


def _rewrite(data: bytes, mutate: Any) -> bytes:
    """The tar `data` with each regular member's content passed through mutate(name, content)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as tin, tarfile.open(fileobj=out, mode="w") as tout:
        for m in tin:
            content = tin.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            if content is not None:
                content = mutate(m.name, content)
                m.size = len(content)
            tout.addfile(m, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def test_corrupted_content_object_rejected(tmp_path: Path, fixture_layer: bytes) -> None:
    def flip(name: str, content: bytes) -> bytes:
        if name.endswith("5b/7a2af2df2d0825cec7b703640361e4a59d5e6b31a36563cfd34fc60d79b1d0.file"):
            return content[:-1] + bytes([content[-1] ^ 1])
        return content

    repo = new_repo(tmp_path / "repo")
    with pytest.raises(ImportFailure, match=r"5b7a2af2.*[Cc]orrupted"), transaction(repo):
        import_layer_objects(repo, io.BytesIO(_rewrite(fixture_layer, flip)), layer="l0", commit_layer=True)
    assert not repo.has_object(OSTree.ObjectType.COMMIT, BASE_COMMIT, None)[1]


def test_corrupted_metadata_object_rejected(tmp_path: Path, fixture_layer: bytes) -> None:
    def flip(name: str, content: bytes) -> bytes:
        return content[:-1] + bytes([content[-1] ^ 1]) if name.endswith(".dirtree") else content

    repo = new_repo(tmp_path / "repo")
    with pytest.raises(ImportFailure, match="layer l0: object"), transaction(repo):
        import_layer_objects(repo, io.BytesIO(_rewrite(fixture_layer, flip)), layer="l0", commit_layer=True)


def test_metadata_in_chunk_layer_refused(tmp_path: Path, fixture_layer: bytes) -> None:
    repo = new_repo(tmp_path / "repo")
    with pytest.raises(ImportFailure, match="in a chunk layer"), transaction(repo):
        import_layer_objects(repo, io.BytesIO(fixture_layer), layer="l0", commit_layer=False)


def test_content_before_commit_refused(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.file("sysroot/ostree/repo/objects/aa/" + "b" * 62 + ".file", b"x")
    repo = new_repo(tmp_path / "repo")
    with pytest.raises(ImportFailure, match="before the commit"), transaction(repo):
        import_layer_objects(repo, io.BytesIO(tw.bytes()), layer="l0", commit_layer=True)


class _Interrupting(io.RawIOBase):
    """A stream that raises KeyboardInterrupt (as SIGINT does) after `limit` bytes."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.inner = io.BytesIO(data)
        self.limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.inner.tell() >= self.limit:
            raise KeyboardInterrupt
        data = self.inner.read(min(len(buffer), 512))
        buffer[: len(data)] = data
        return len(data)


def _tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib/big").mkdir(parents=True)
    (root / "usr/etc").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "usr/lib/big/blob").write_bytes(os.urandom(400 * 1024))  # > the inline threshold: streamed
    (root / "usr/lib/empty").write_bytes(b"")
    (root / "usr/etc/os-release").write_text("ID=test\n")
    os.link(root / "usr/bin/tool", root / "usr/bin/tool2")
    (root / "usr/bin/sh").symlink_to("tool")
    (root / "usr/lib/dangling").symlink_to("/nonexistent//path")
    return root


@pytest.fixture
def test_commit(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src-repo"
    new_repo(src)
    return src, make_test_commit(src, _tree(tmp_path / "tree"))


def _v1_image(tmp_path: Path, src: Path, commit: str, chunks: int, name: str = "oci") -> Path:
    layout = tmp_path / name
    blobs = [add_gzip_layer(layout, tar) for tar in v1_layers_from_commit(src, commit, chunks)]
    labels = {"ostree.commit": commit, "ostree.final-diffid": blobs[-1].diff_id, "ostree.bootable": "true"}
    return write_oci_image(layout, blobs, labels, created="2024-05-01T10:00:00Z")


def test_interrupted_layer_leaves_nothing(tmp_path: Path, test_commit: tuple[Path, str]) -> None:
    src, commit = test_commit
    (layer,) = v1_layers_from_commit(src, commit, 0)
    repo_path = tmp_path / "repo"
    repo = new_repo(repo_path)
    with pytest.raises(KeyboardInterrupt), transaction(repo):
        import_layer_objects(
            repo,
            io.BufferedReader(_Interrupting(layer, len(layer) // 2)),
            layer="l0",
            commit_layer=True,
            expected_commit=commit,
        )
    assert refs(repo_path) == []
    assert not repo.has_object(OSTree.ObjectType.COMMIT, commit, None)[1]
    assert list((repo_path / "state").iterdir()) == []  # no partial marker for a commit that is not there
    # Whatever happens next starts from a clean repository.
    with transaction(repo):
        import_layer_objects(repo, io.BytesIO(layer), layer="l0", commit_layer=True, expected_commit=commit)
    repo.mark_commit_partial(commit, False)
    fsck(repo_path)


@pytest.mark.parametrize("chunks", [0, 3])
def test_v1_round_trip(tmp_path: Path, test_commit: tuple[Path, str], chunks: int) -> None:
    src, commit = test_commit
    image = image_from_oci_dir(_v1_image(tmp_path, src, commit, chunks))
    assert image.layout is Layout.CHUNKED and len(image.layers) == chunks + 1
    repo_path = tmp_path / "repo"
    result = import_image(image, repo_path, imgref="docker://registry.invalid/test/os:1")
    assert result.base_commit == commit
    assert result.imported_layers == tuple(x.digest for x in image.layers[1:] + image.layers[:1])
    assert result.image_ref == image_ref("docker://registry.invalid/test/os:1")
    all_refs = refs(repo_path)
    assert {layer_ref(x.digest) for x in image.layers} | {result.image_ref} == set(all_refs)
    fsck(repo_path)
    diff = run.run(["ostree", f"--repo={repo_path}", "diff", commit, result.merge_commit]).out
    assert diff == ""
    show = run.run(["ostree", f"--repo={repo_path}", "show", result.merge_commit]).out
    assert "2024-05-01 10:00:00" in show
    meta = run.run(
        [
            "ostree",
            f"--repo={repo_path}",
            "show",
            "--print-metadata-key=ostree.manifest-digest",
            result.image_ref,
        ]
    ).out
    assert image.manifest_digest in meta
    # Same image again: nothing is read, every layer is reused.
    again = import_image(image, repo_path, imgref="docker://registry.invalid/test/os:1")
    assert again.imported_layers == ()
    assert set(again.reused_layers) == {x.digest for x in image.layers}
    assert again.merge_commit == result.merge_commit


def test_v1_chunk_missing_object_detected(tmp_path: Path, test_commit: tuple[Path, str]) -> None:
    """A commit layer whose chunks do not carry every object: no ref to the incomplete commit."""
    src, commit = test_commit
    layers = v1_layers_from_commit(src, commit, 2)
    layout = tmp_path / "oci"
    blobs = [add_gzip_layer(layout, tar) for tar in layers[:2]]  # the last chunk is left out
    labels = {"ostree.commit": commit, "ostree.final-diffid": blobs[-1].diff_id}
    image = image_from_oci_dir(write_oci_image(layout, blobs, labels))
    repo_path = tmp_path / "repo"
    with pytest.raises(ImportFailure, match="references objects no layer of the image carries"):
        import_image(image, repo_path, imgref="oci:/x")
    assert layer_ref(image.layers[0].digest) not in refs(repo_path)
    assert not any(r.startswith("ostree/container/image/") for r in refs(repo_path))


@pytest.mark.parametrize("which", [0, 1])
def test_corrupt_blob_caught_while_streaming(tmp_path: Path, ostree_ext_fixtures: Path, which: int) -> None:
    """A blob that changed after the fetch (here: no fetch at all) fails in open_layer, naming the layer;
    the layer gets no ref and the image no ref."""
    layout = tmp_path / "oci"
    with tarfile.open(ostree_ext_fixtures / "exampleos-derive.ociarchive") as tf:
        tf.extractall(layout)  # a trusted fixture
    image = image_from_oci_dir(layout)
    bad = image.layers[which]
    blob = image.blob_path(bad.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    repo_path = tmp_path / "repo"
    with pytest.raises(ImgbuildError, match=f"layer {bad.digest}") as info:
        import_image(image, repo_path, imgref="oci:/x")
    assert info.value.exit_code == 2
    expected = {layer_ref(image.layers[0].digest)} if which == 1 else set()
    assert set(refs(repo_path)) == expected
    fsck(repo_path)


def test_legacy_diffid_layout(tmp_path: Path, test_commit: tuple[Path, str]) -> None:
    """v0 with `ostree.diffid`: the chunk layers come first, the commit layer is the one the label names."""
    src, commit = test_commit
    commit_tar, *chunk_tars = v1_layers_from_commit(src, commit, 2)
    layout = tmp_path / "oci"
    blobs = [add_gzip_layer(layout, tar) for tar in [*chunk_tars, commit_tar]]
    labels = {"ostree.commit": commit, "ostree.diffid": blobs[-1].diff_id}
    image = image_from_oci_dir(write_oci_image(layout, blobs, labels, created="2022-05-01T00:00:00Z"))
    assert image.layout is Layout.LEGACY
    result = import_image(image, tmp_path / "repo", imgref="oci:/legacy")
    assert result.base_commit == commit
    assert run.run(["ostree", f"--repo={tmp_path / 'repo'}", "diff", commit, result.merge_commit]).out == ""
    fsck(tmp_path / "repo")
