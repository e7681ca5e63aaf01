"""Encapsulated images read by the real tools: skopeo (inspect, copy), umoci (unpack), and imgbuild's own
importer, which must get back the very commit that was encapsulated; then the same for the example OS.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.errors import ImgbuildError
from builder.ostree.encapsulate import EncapsulateResult, encapsulate
from builder.ostree.importer import import_image
from builder.source.fetch import fetch_image
from builder.source.reference import parse_reference
from tests.unit.test_encapsulate import KVER, MadeCommit, make_commit


@pytest.fixture(scope="module")
def commit(tmp_path_factory: pytest.TempPathFactory) -> MadeCommit:
    return make_commit(tmp_path_factory.mktemp("commit"))


@pytest.fixture(scope="module")
def archive(commit: MadeCommit, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EncapsulateResult]:
    path = tmp_path_factory.mktemp("archive") / "os.ociarchive"
    return path, encapsulate(commit.repo, "test/os", f"oci-archive:{path}:latest")


def _inspect(reference: str) -> dict[str, object]:
    data = json.loads(run.run(["skopeo", "inspect", reference]).out)
    assert isinstance(data, dict)
    return data


def test_skopeo_reads_archive_and_directory(
    commit: MadeCommit, archive: tuple[Path, EncapsulateResult], tmp_path: Path
) -> None:
    path, result = archive
    shown = _inspect(f"oci-archive:{path}:latest")
    assert shown["Digest"] == result.manifest_digest
    labels = shown["Labels"]
    assert isinstance(labels, dict) and labels["ostree.commit"] == commit.checksum
    raw = run.run(["skopeo", "inspect", "--raw", f"oci-archive:{path}"]).stdout
    assert json.loads(raw)["layers"][0]["digest"] == result.layers[0].digest
    oci = encapsulate(commit.repo, commit.checksum, f"oci:{tmp_path / 'oci'}")
    assert _inspect(f"oci:{tmp_path / 'oci'}")["Digest"] == oci.manifest_digest == result.manifest_digest
    # a copy re-reads and verifies every blob
    run.run(["skopeo", "copy", "--quiet", f"oci-archive:{path}", f"oci:{tmp_path / 'copy'}:c"])
    run.run(
        ["skopeo", "copy", "--quiet", f"oci:{tmp_path / 'oci'}:latest", f"oci-archive:{tmp_path / 'c.tar'}"]
    )
    assert _inspect(f"oci:{tmp_path / 'copy'}:c")["Digest"] == result.manifest_digest
    assert _inspect(f"oci-archive:{tmp_path / 'c.tar'}")["Digest"] == result.manifest_digest


def test_umoci_unpacks_the_root_filesystem(archive: tuple[Path, EncapsulateResult], tmp_path: Path) -> None:
    path, _ = archive
    run.run(["skopeo", "copy", "--quiet", f"oci-archive:{path}", f"oci:{tmp_path / 'oci'}:t"])
    run.run(["umoci", "unpack", "--image", f"{tmp_path / 'oci'}:t", tmp_path / "bundle"])
    root = tmp_path / "bundle" / "rootfs"
    assert (root / "usr/bin/hello").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert (root / "usr/bin/hello").stat().st_ino == (root / "usr/bin/hello-link").stat().st_ino
    assert (root / "usr/bin/hi").readlink() == Path("hello")
    assert (root / "etc/hostname").read_bytes() == b"testhost\n"
    assert (root / "etc/machine-id").stat().st_size == 0
    assert os.getxattr(root / "usr/lib/x86_64-linux-gnu/libbig.so.1", "user.test") == b"lib-attr"
    assert os.getxattr(root / "usr/bin/hello", "user.binary") == b"\xff\x00\x01"
    assert (root / "usr/bin/setuid-tool").stat().st_mode & 0o7777 == 0o4755
    assert (root / f"usr/lib/modules/{KVER}/vmlinuz").stat().st_size == 150_000
    assert (root / "var/tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "sysroot/ostree/repo/config").is_file()


def _round_trip(reference: str, tmp: Path) -> str | None:
    image = fetch_image(parse_reference(reference), cache=tmp / "cache")
    imported = import_image(image, tmp / "repo", imgref=f"ostree-unverified-image:{reference}")
    run.run(["ostree", "fsck", f"--repo={tmp / 'repo'}"])
    return imported.base_commit


def test_importer_gets_the_same_commit_back(
    commit: MadeCommit, archive: tuple[Path, EncapsulateResult], tmp_path: Path
) -> None:
    path, _ = archive
    assert _round_trip(f"oci-archive:{path}:latest", tmp_path / "a") == commit.checksum
    # also with everything in the commit layer, and with a directory layout
    encapsulate(commit.repo, "test/os", f"oci:{tmp_path / 'one'}:x", max_layers=1)
    assert _round_trip(f"oci:{tmp_path / 'one'}:x", tmp_path / "b") == commit.checksum


def test_example_os(tmp_path: Path) -> None:
    """The example Debian OS: time and sizes, chunking by package, and the importer's round trip."""
    from builder.example import build_example

    example = build_example(Arch.X86_64)
    started = time.monotonic()
    result = encapsulate(example.repo, example.commit, f"oci-archive:{tmp_path / 'ex.ociarchive'}")
    seconds = time.monotonic() - started
    size = (tmp_path / "ex.ociarchive").stat().st_size
    print(f"example OS: encapsulated in {seconds:.1f} s, {len(result.layers)} layers, {size} bytes")
    assert len(result.layers) <= 64
    kernel = [layer for layer in result.layers if any(c.startswith("linux-image-") for c in layer.components)]
    assert len(kernel) == 1 and all(c.startswith("linux-image-") for c in kernel[0].components)
    components = [c for layer in result.layers for c in layer.components]
    assert len(components) == len(set(components)) and {"libc6", "systemd", "bash"} <= set(components)
    assert result.layers[0].size < 5 * 1024 * 1024  # metadata and a few files: the part every update changes
    assert _round_trip(result.reference, tmp_path / "rt") == example.commit


def test_sigterm_leaves_nothing(tmp_path: Path) -> None:
    """Killing `imgbuild encapsulate` in the middle of the layers removes the partial output."""
    from builder.example import build_example

    example = build_example(Arch.X86_64)
    imgbuild = Path(sys.executable).parent / "imgbuild"
    argv: list[str | Path] = [
        imgbuild,
        "encapsulate",
        "--repo",
        example.repo,
        example.commit,
        f"oci-archive:{tmp_path / 'x.tar'}",
    ]
    with run.spawn(argv, check=False) as proc:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".x.tar.*/blobs/sha256/*")) and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until layers are being written
        assert proc.poll() is None, "finished before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
    assert list(tmp_path.iterdir()) == []


def test_no_space_is_a_clear_error(commit: MadeCommit, tmp_path: Path) -> None:
    """A destination that fills up: one error line (exit 2), and the partial image is gone."""
    small = tmp_path / "small"
    small.mkdir()
    run.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", small])
    try:
        for dest in (f"oci-archive:{small / 'x.ociarchive'}", f"oci:{small / 'dir'}"):
            with pytest.raises(ImgbuildError, match=r"cannot write .*No space left"):
                encapsulate(commit.repo, "test/os", dest)
            assert list(small.iterdir()) == []
    finally:
        run.run(["umount", small])
