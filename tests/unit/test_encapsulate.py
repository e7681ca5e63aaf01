"""Encapsulating a real ostree commit (made here with `ostree commit --tree=dir=`) as an ostree-native image.

The commit has regular files, hard links, symlinks, xattrs, an empty file, /usr/etc, a fake kernel and a fake
dpkg database; the tests read the written layout back with tarfile and check the v1 layout rules
(research/ostree.md §1.3), the labels, determinism and max_layers. No root needed (a bare-user repository).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder import run
from builder.errors import ImgbuildError
from builder.ostree.encapsulate import EncapsulateResult, encapsulate

TIMESTAMP = "2024-01-02T03:04:05Z"
KVER = "6.1.0-test"
PACKAGES = {
    "hello": ["/usr/bin/hello", "/bin/hello-link", "/etc/hello.conf", "/usr/share/doc/hello/copyright"],
    "libbig1": ["/usr/lib/x86_64-linux-gnu/libbig.so.1", "/usr/lib/x86_64-linux-gnu/libbig.so"],
    "data-common": ["/usr/share/data-common/blob.bin", "/usr/share/data-common/empty"],
    f"linux-image-{KVER}": [f"/boot/vmlinuz-{KVER}", f"/usr/lib/modules/{KVER}/kernel/fake.ko"],
    "removed-pkg": ["/usr/share/removed/file"],
}
DPKG = "usr/lib/sysimage/dpkg"


@dataclass(frozen=True)
class MadeCommit:
    repo: Path
    checksum: str
    tree: Path  # the directory that was committed


def _pseudo_random(size: int, seed: str) -> bytes:
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 4  # compressible, but not trivially
    return bytes(out[:size])


def build_tree(root: Path) -> None:
    def put(path: str, data: bytes, mode: int = 0o644) -> Path:
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(mode)
        return p

    hello = put("usr/bin/hello", b"#!/bin/sh\necho hello\n", 0o755)
    os.setxattr(hello, "user.binary", b"\xff\x00\x01")  # not UTF-8: PAX hdrcharset=BINARY
    os.link(root / "usr/bin/hello", root / "usr/bin/hello-link")
    (root / "usr/bin/hi").symlink_to("hello")
    put("usr/bin/setuid-tool", b"suid\n", 0o4755)
    put("usr/etc/hello.conf", b"greeting=hello\n")
    put("usr/etc/machine-id", b"")
    put("usr/etc/hostname", b"testhost\n")
    (root / "usr/etc/localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    put("usr/share/doc/hello/copyright", b"GPL\n")
    lib = put("usr/lib/x86_64-linux-gnu/libbig.so.1", _pseudo_random(300_000, "libbig"), 0o755)
    (root / "usr/lib/x86_64-linux-gnu/libbig.so").symlink_to("libbig.so.1")
    os.setxattr(lib, "user.test", b"lib-attr")
    put("usr/share/data-common/blob.bin", _pseudo_random(200_000, "data"))
    put("usr/share/data-common/empty", b"")
    put("usr/share/unowned/notes.txt", b"nobody owns me\n" * 100)
    put("usr/share/removed/file", b"left over\n")
    put(f"usr/lib/modules/{KVER}/vmlinuz", _pseudo_random(150_000, "kernel"))
    put(f"usr/lib/modules/{KVER}/initramfs.img", _pseudo_random(100_000, "initramfs"))
    put(f"usr/lib/modules/{KVER}/kernel/fake.ko", _pseudo_random(50_000, "module"))
    status = "".join(
        f"Package: {name}\nStatus: install ok {'not-installed' if name == 'removed-pkg' else 'installed'}\n"
        f"Architecture: amd64\nVersion: 1.0\n\n"
        for name in sorted(PACKAGES)
    )
    put(f"{DPKG}/status", status.encode())
    for name, paths in PACKAGES.items():
        listname = "libbig1:amd64.list" if name == "libbig1" else f"{name}.list"
        dirs = sorted({str(Path(p).parent) for p in paths})
        put(f"{DPKG}/info/{listname}", ("/.\n" + "\n".join(dirs + paths) + "\n").encode())
    (root / "usr/lib/os-release").write_text("ID=test\n")
    (root / "var").mkdir()
    (root / "sysroot").mkdir()
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/share/data-common").chmod(0o750)


def make_commit(tmp: Path, *, detached: bool = True) -> MadeCommit:
    tree = tmp / "tree"
    build_tree(tree)
    repo = tmp / "repo"
    run.run(["ostree", "init", f"--repo={repo}", "--mode=bare-user"])
    argv = [
        "ostree",
        "commit",
        f"--repo={repo}",
        "--branch=test/os",
        f"--tree=dir={tree}",
        f"--timestamp={TIMESTAMP}",
        "--subject=Test OS 1.2.3",
        "--add-metadata-string=version=1.2.3",
        "--add-metadata=ostree.bootable=true",
        "--add-metadata=ostree.container-cmd=['/usr/bin/hello']",
    ]
    if detached:
        argv.append("--add-detached-metadata-string=note=detached")
    checksum = run.run(argv).out.strip()
    return MadeCommit(repo, checksum, tree)


@pytest.fixture(scope="module")
def commit(tmp_path_factory: pytest.TempPathFactory) -> MadeCommit:
    return make_commit(tmp_path_factory.mktemp("commit"))


@dataclass(frozen=True)
class Written:
    layout: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    result: EncapsulateResult

    def blob(self, digest: str) -> Path:
        return self.layout / "blobs" / "sha256" / digest.partition(":")[2]

    def layer_members(self, index: int) -> list[tarfile.TarInfo]:
        with tarfile.open(self.blob(self.manifest["layers"][index]["digest"]), "r:gz") as tar:
            return tar.getmembers()


def write(commit: MadeCommit, dest: Path, **kwargs: Any) -> Written:
    result = encapsulate(commit.repo, "test/os", f"oci:{dest}", **kwargs)
    index = json.loads((dest / "index.json").read_bytes())
    (entry,) = index["manifests"]
    assert entry["digest"] == result.manifest_digest
    manifest = json.loads((dest / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    config = json.loads((dest / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())
    return Written(dest, manifest, config, result)


@pytest.fixture(scope="module")
def image(commit: MadeCommit, tmp_path_factory: pytest.TempPathFactory) -> Written:
    return write(commit, tmp_path_factory.mktemp("out") / "oci")


def _object_sum(name: str) -> str:
    xx, rest = name.split("/")[-2:]
    return xx + rest.partition(".")[0]


def expected_paths(tree: Path) -> Iterator[tuple[str, str]]:
    """(tar path, kind) of every non-directory in the committed tree, /usr/etc spelled /etc."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            rel = (Path(dirpath) / name).relative_to(tree).as_posix()
            if rel.startswith("usr/etc/"):
                rel = rel[4:]
            kind = "link" if (Path(dirpath) / name).is_symlink() else "file"
            yield rel, kind


def test_labels_config_and_history(image: Written, commit: MadeCommit) -> None:
    labels = image.config["config"]["Labels"]
    diff_ids = image.config["rootfs"]["diff_ids"]
    assert labels["ostree.commit"] == commit.checksum
    assert labels["ostree.final-diffid"] == diff_ids[-1]
    assert labels["ostree.bootable"] == "true" and labels["containers.bootc"] == "1"
    assert labels["ostree.linux"] == KVER
    assert labels["version"] == labels["org.opencontainers.image.version"] == "1.2.3"
    assert image.manifest["annotations"] == labels
    assert image.manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert (
        image.config["os"] == "linux" and image.config["architecture"] == "amd64"
    )  # from ld.so-less tree: host
    assert image.config["created"] == TIMESTAMP
    assert image.config["config"]["Cmd"] == ["/usr/bin/hello"]
    history = [h["created_by"] for h in image.config["history"]]
    assert history[0] == "Test OS 1.2.3"
    assert len(history) == len(diff_ids) == len(image.manifest["layers"])
    for layer, diff_id, made in zip(image.result.layers, diff_ids, history, strict=True):
        assert layer.diff_id == diff_id and layer.name == made
    for descriptor in image.manifest["layers"]:
        assert descriptor["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        blob = image.blob(descriptor["digest"]).read_bytes()
        assert len(blob) == descriptor["size"]
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == descriptor["digest"]


def test_diff_ids_are_the_uncompressed_tars(image: Written) -> None:
    import gzip

    for descriptor, diff_id in zip(image.manifest["layers"], image.config["rootfs"]["diff_ids"], strict=True):
        raw = gzip.decompress(image.blob(descriptor["digest"]).read_bytes())
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id


def test_commit_layer_structure(image: Written, commit: MadeCommit) -> None:
    members = image.layer_members(0)
    names = [m.name for m in members]
    assert names[0] == "."  # tarfile strips the trailing slash of "./"
    assert names[1:5] == ["sysroot", "sysroot/ostree", "sysroot/ostree/repo", "sysroot/ostree/repo/objects"]
    assert names[5:261] == [f"sysroot/ostree/repo/objects/{i:02x}" for i in range(256)]
    config = members[names.index("sysroot/ostree/repo/config")]
    objects = [n for n in names if n.startswith("sysroot/ostree/repo/objects/") and "." in n]
    assert objects[0] == f"sysroot/ostree/repo/objects/{commit.checksum[:2]}/{commit.checksum[2:]}.commit"
    assert objects[1].endswith(".commitmeta") and objects[2].endswith(".dirmeta")
    assert objects[3].endswith(".dirtree")
    assert config.size == len(b"[core]\nrepo_version=1\nmode=bare-split-xattrs\n")
    dirs = {m.name: m for m in members if m.isdir()}
    assert "./etc" in dirs and "./usr/etc" not in dirs and "./usr/bin" in dirs
    assert "./sysroot" not in dirs and "var/tmp" in dirs and dirs["var/tmp"].mode == 0o1777
    assert dirs["./usr/share/data-common"].mode == 0o750
    assert all(m.mtime == 0 and m.uname == "" and m.gname == "" for m in members)


def test_every_path_and_object_once(image: Written, commit: MadeCommit) -> None:
    seen_paths: dict[str, tarfile.TarInfo] = {}
    object_layer: dict[str, int] = {}
    for index in range(len(image.manifest["layers"])):
        members = image.layer_members(index)
        by_name = {m.name: m for m in members}
        previous: list[str] = []
        for m in members:
            if m.name.startswith("sysroot/ostree/repo/objects/") and m.name.endswith(".file"):
                checksum = _object_sum(m.name)
                assert checksum not in object_layer, f"{checksum} in two layers"
                object_layer[checksum] = index
                # xattrs first: the .file-xattrs-link just before the object, pointing to a .file-xattrs
                link = previous[-1]
                assert link.endswith(".file-xattrs-link") and _object_sum(link) == checksum
                target = by_name[link].linkname
                assert target.endswith(".file-xattrs") and by_name[link].islnk()
                assert hashlib.sha256(_read(image, index, target)).hexdigest() == _object_sum(target)
                assert not m.mode & 0o170000
            elif not m.name.startswith(("sysroot", "./")) and not m.isdir():
                assert m.name not in seen_paths, f"{m.name} twice"
                seen_paths[m.name] = m
            previous.append(m.name)
    expected = dict(expected_paths(commit.tree))
    assert set(seen_paths) == set(expected)
    for name, m in seen_paths.items():
        if m.islnk():
            assert m.linkname.startswith("sysroot/ostree/repo/objects/") and m.linkname.endswith(".file")
        else:  # zero-size regular files are written as themselves, not as links
            assert m.isreg() and m.size == 0, name
    assert seen_paths["etc/machine-id"].isreg()
    assert seen_paths["usr/share/data-common/empty"].isreg()
    assert seen_paths["usr/bin/setuid-tool"].mode == 0o4755
    assert seen_paths["usr/bin/hello"].linkname == seen_paths["usr/bin/hello-link"].linkname


def _read(image: Written, index: int, name: str) -> bytes:
    with tarfile.open(image.blob(image.manifest["layers"][index]["digest"]), "r:gz") as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_xattrs_split_and_pax(image: Written) -> None:
    for index in range(len(image.manifest["layers"])):
        for m in image.layer_members(index):
            if m.name == "usr/lib/x86_64-linux-gnu/libbig.so.1":
                assert m.pax_headers.get("SCHILY.xattr.user.test") == "lib-attr"
                assert "SCHILY.xattr.security.selinux" not in m.pax_headers
                obj = m.linkname
                raw = _read(image, index, obj.replace(".file", ".file-xattrs-link"))
                assert b"user.test\0" in raw and b"lib-attr" in raw
                return
    raise AssertionError("libbig.so.1 not found")


def test_package_chunks(image: Written) -> None:
    layers = image.result.layers
    by_component = {c: layer for layer in layers[1:] for c in layer.components}
    assert by_component[f"linux-image-{KVER}"].components == (f"linux-image-{KVER}",)
    assert {"hello", "libbig1", "data-common"} <= by_component.keys()
    assert "removed-pkg" not in by_component  # not installed: its file is grouped by path
    for layer, descriptor in zip(layers[1:], image.manifest["layers"][1:], strict=True):
        assert descriptor["annotations"]["ostree.components"] == ",".join(layer.components)
    kernel = layers.index(by_component[f"linux-image-{KVER}"])
    names = {m.name for m in image.layer_members(kernel)}
    assert {f"usr/lib/modules/{KVER}/vmlinuz", f"usr/lib/modules/{KVER}/initramfs.img"} <= names
    hello = {m.name for m in image.layer_members(layers.index(by_component["hello"]))}
    assert {"usr/bin/hello", "usr/bin/hello-link", "etc/hello.conf"} <= hello
    # unowned configuration stays in the commit layer
    assert "etc/hostname" in {m.name for m in image.layer_members(0)}


@pytest.mark.parametrize("max_layers", [1, 2, 3, 64])
def test_max_layers(commit: MadeCommit, tmp_path: Path, max_layers: int) -> None:
    written = write(commit, tmp_path / "oci", max_layers=max_layers)
    count = len(written.manifest["layers"])
    assert count <= max_layers
    assert (
        written.config["config"]["Labels"]["ostree.final-diffid"] == written.config["rootfs"]["diff_ids"][-1]
    )
    if max_layers <= 3:
        assert count == max_layers
    if max_layers == 3:  # the kernel keeps a layer of its own
        assert written.result.layers[1].components == (f"linux-image-{KVER}",) or written.result.layers[
            2
        ].components == (f"linux-image-{KVER}",)
    files = set()
    for index in range(count):
        files |= {m.name for m in written.layer_members(index) if m.isfile() or m.islnk() or m.issym()}
    assert {p for p, _ in expected_paths(commit.tree)} <= files


def test_deterministic(commit: MadeCommit, image: Written, tmp_path: Path) -> None:
    again = encapsulate(commit.repo, commit.checksum, f"oci-archive:{tmp_path / 'x.ociarchive'}:v1")
    assert again.manifest_digest == image.result.manifest_digest
    assert again.config_digest == image.result.config_digest
    other = write(commit, tmp_path / "oci2")
    for blob in (image.layout / "blobs/sha256").iterdir():
        assert (other.layout / "blobs/sha256" / blob.name).read_bytes() == blob.read_bytes()
    assert sorted(p.name for p in (other.layout / "blobs/sha256").iterdir()) == sorted(
        p.name for p in (image.layout / "blobs/sha256").iterdir()
    )
    assert again.reference == f"oci-archive:{tmp_path / 'x.ociarchive'}:v1"
    with tarfile.open(tmp_path / "x.ociarchive") as tar:
        names = tar.getnames()
    assert {"oci-layout", "index.json"} <= set(names)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_extra_labels_and_arch(commit: MadeCommit, tmp_path: Path) -> None:
    from builder.arch import Arch

    written = write(commit, tmp_path / "oci", extra_labels={"org.example.x": "y"}, arch=Arch.AARCH64)
    assert written.config["config"]["Labels"]["org.example.x"] == "y"
    assert written.config["architecture"] == "arm64"
    with pytest.raises(ImgbuildError):
        encapsulate(commit.repo, "test/os", f"oci:{tmp_path / 'bad'}", extra_labels={"ostree.commit": "x"})


def test_second_tag_keeps_the_first(commit: MadeCommit, tmp_path: Path) -> None:
    first = encapsulate(commit.repo, "test/os", f"oci:{tmp_path / 'oci'}:one")
    encapsulate(commit.repo, "test/os", f"oci:{tmp_path / 'oci'}:two", max_layers=2)
    index = json.loads((tmp_path / "oci/index.json").read_bytes())
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}
    assert tags["one"] == first.manifest_digest and set(tags) == {"one", "two"}


@pytest.mark.parametrize(
    "dest",
    [
        "docker://registry.invalid/x",
        "oci:",
        "nonsense",
        "oci-archive:{tmp}/missing-dir/x.tar",
        "oci:{tmp}/f:bad tag",
    ],
)
def test_bad_destination(commit: MadeCommit, tmp_path: Path, dest: str) -> None:
    with pytest.raises(ImgbuildError):
        encapsulate(commit.repo, "test/os", dest.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_unknown_rev_and_repo(commit: MadeCommit, tmp_path: Path) -> None:
    with pytest.raises(ImgbuildError, match="not a ref"):
        encapsulate(commit.repo, "no/such/ref", f"oci:{tmp_path / 'oci'}")
    with pytest.raises(ImgbuildError, match="cannot open"):
        encapsulate(tmp_path / "norepo", "test/os", f"oci-archive:{tmp_path / 'x.tar'}")
    with pytest.raises(ImgbuildError):
        encapsulate(commit.repo, "test/os", f"oci:{tmp_path / 'oci'}", max_layers=0)
    assert list(tmp_path.iterdir()) == []


def test_cli(commit: MadeCommit, image: Written, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from builder.cli import main

    dest = f"oci-archive:{tmp_path / 'cli.ociarchive'}"
    assert main(["encapsulate", "--repo", str(commit.repo), "test/os", dest]) == 0
    assert capsys.readouterr().out.strip() == image.result.manifest_digest
    argv = ["encapsulate", "--repo", str(commit.repo), "--label", "a=b=c", "--max-layers", "2", "test/os"]
    assert main([*argv, f"oci:{tmp_path / 'oci'}", "--arch", "arm64"]) == 0
    digest = capsys.readouterr().out.strip()
    manifest = json.loads((tmp_path / "oci/blobs/sha256" / digest[7:]).read_bytes())
    assert manifest["annotations"]["a"] == "b=c" and len(manifest["layers"]) == 2
    assert main([*argv[:-1], "--label", "novalue", "test/os", f"oci:{tmp_path / 'x'}"]) == 2
    assert main([*argv, f"oci:{tmp_path / 'y'}", "--arch", "mips"]) == 2
    capsys.readouterr()
    assert main(["encapsulate", "--repo", str(commit.repo), "nope", dest + "2"]) == 2
    assert "not a ref" in capsys.readouterr().err


@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
@pytest.mark.parametrize("damage", ["missing", "no-metadata"])
def test_damaged_repository_leaves_nothing(
    commit: MadeCommit, tmp_path: Path, transport: str, damage: str
) -> None:
    """A damaged object fails the encapsulation with one clear error and nothing left behind, whether it is
    found before writing (a missing object) or in the middle of a layer (bare-user metadata gone)."""
    repo = tmp_path / "repo"
    shutil.copytree(commit.repo, repo, symlinks=True)
    big = next(p for p in (repo / "objects").rglob("*.file") if p.stat().st_size == 300_000)
    if damage == "missing":
        big.unlink()
    else:
        os.removexattr(big, "user.ostreemeta")
    out = tmp_path / "out"
    out.mkdir()
    expected = "cannot read commit" if damage == "missing" else "cannot read an object"  # before / during
    with pytest.raises(ImgbuildError, match=expected):
        encapsulate(repo, "test/os", f"{transport}:{out / 'image'}")
    assert list(out.iterdir()) == []
