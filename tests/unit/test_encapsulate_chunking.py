"""The chunking plan (builder.ostree.chunking) and the small parts of the OCI writer (builder.oci.writer)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from builder.oci.writer import (
    DestinationError,
    OciLayoutWriter,
    TarStream,
    Transport,
    parse_destination,
)
from builder.ostree import chunking
from builder.ostree.chunking import ContentObject


def obj(name: str, size: int, *paths: str) -> ContentObject:
    return ContentObject(hashlib.sha256(name.encode()).hexdigest(), size, tuple(sorted(paths)))


def test_find_dpkg_database_prefers_the_sysimage_location() -> None:
    paths = {
        "var/lib/dpkg/status",
        "var/lib/dpkg/info/a.list",
        "usr/lib/sysimage/dpkg/status",
        "usr/lib/sysimage/dpkg/info/a.list",
    }
    assert chunking.find_dpkg_database(paths) == "usr/lib/sysimage/dpkg"
    assert chunking.find_dpkg_database({"var/lib/dpkg/status", "var/lib/dpkg/info/a.list"}) == "var/lib/dpkg"
    assert chunking.find_dpkg_database({"opt/x/dpkg/status", "opt/x/dpkg/info/b:amd64.list"}) == "opt/x/dpkg"
    assert chunking.find_dpkg_database({"var/lib/dpkg/info/a.list"}) is None  # no status
    assert chunking.find_dpkg_database({"usr/bin/sh"}) is None


def test_installed_packages() -> None:
    status = (
        "Package: a\nStatus: install ok installed\nDescription: x\n  Status: fake continuation\n\n"
        "Package: b\nStatus: deinstall ok config-files\n\n"
        "Package: c\nStatus: install ok installed\n"
    )
    assert chunking.installed_packages(status) == {"a", "c"}


def test_list_paths_map_to_the_commit() -> None:
    present = {"usr/bin/bash", "usr/etc/bash.bashrc", "usr/share/doc/bash/copyright"}
    assert chunking.commit_path_of("/bin/bash", present) == "usr/bin/bash"  # usrmerge
    assert chunking.commit_path_of("/etc/bash.bashrc", present) == "usr/etc/bash.bashrc"
    assert chunking.commit_path_of("/usr/share/doc/bash/copyright", present) == "usr/share/doc/bash/copyright"
    assert chunking.commit_path_of("/.", present) is None
    assert chunking.commit_path_of("/usr/share/doc/bash", present) is None  # directories are not objects
    assert chunking.package_of_list("libc6:amd64.list") == "libc6"
    owners = chunking.owners_from_lists({"bash": "/.\n/bin/bash\n/etc/bash.bashrc\n"}, present)
    assert owners == {"usr/bin/bash": {"bash"}, "usr/etc/bash.bashrc": {"bash"}}


def test_component_of() -> None:
    owners = {"usr/bin/a": {"pkg-b", "pkg-a"}, "usr/lib/modules/6.1/x.ko": {"linux-image-6.1"}}
    assert chunking.component_of(obj("1", 1, "usr/bin/a"), owners) == "pkg-a"
    assert chunking.component_of(obj("2", 1, "usr/lib/modules/6.1/vmlinuz"), {}) == chunking.KERNEL
    assert chunking.component_of(obj("3", 1, "usr/share/doc/x/y"), {}) == "usr/share/doc"
    assert chunking.component_of(obj("4", 1, "usr/bin/z"), {}) == "usr/bin"
    assert chunking.component_of(obj("5", 1, "usr/etc/hostname"), {}) is None
    assert chunking.component_of(obj("6", 1, "bin"), {}) is None
    assert chunking.component_of(obj("7", 1), {}) is None
    owners = {"usr/share/doc/linux-image-6.1/changelog": {"linux-image-6.1"}}
    assert chunking.component_of(obj("8", 1, "usr/share/doc/linux-image-6.1/changelog"), owners) == "kernel"


def _objects(spec: dict[str, int]) -> dict[str, ContentObject]:
    """One object per package, named after it, owned through a path usr/share/<pkg>/f."""
    objects = [obj(name, size, f"usr/share/{name}/f") for name, size in spec.items()]
    return {o.checksum: o for o in objects}


def _owners(spec: dict[str, int]) -> dict[str, set[str]]:
    return {f"usr/share/{name}/f": {name} for name in spec}


def test_plan_respects_max_layers_and_places_every_object_once() -> None:
    spec = {f"pkg{i:02d}": (i * 7919) % 100_000 + 100 for i in range(40)}
    spec["big"] = 10_000_000
    objects, owners = _objects(spec), _owners(spec)
    for max_layers in (1, 2, 3, 5, 10, 41, 42, 64):
        plan = chunking.plan_chunks(objects, owners, max_layers)
        assert 1 + len(plan.chunks) <= max_layers
        placed = list(plan.remainder) + [o for c in plan.chunks for o in c.objects]
        assert sorted(placed) == sorted(objects)
        if max_layers >= 3:
            assert any(c.components == ("big",) for c in plan.chunks)  # the largest alone
        if max_layers >= 42:
            assert len(plan.chunks) == 41  # room for every component
    assert chunking.plan_chunks(objects, owners, 1).chunks == ()


def test_kernel_alone_and_named_after_its_packages() -> None:
    objects = [
        obj("vmlinuz", 5_000_000, "usr/lib/modules/6.1.0-9-amd64/vmlinuz"),
        obj("initramfs", 9_000_000, "usr/lib/modules/6.1.0-9-amd64/initramfs.img"),
        obj("a", 100, "usr/share/a/f"),
        obj("b", 200, "usr/share/b/f"),
        obj("c", 20_000_000, "usr/share/c/f"),
        obj("conf", 10, "usr/etc/hostname"),
    ]
    owners = {"usr/share/a/f": {"a"}, "usr/share/b/f": {"b"}, "usr/share/c/f": {"c"}}
    plan = chunking.plan_chunks({o.checksum: o for o in objects}, owners, 3, ["linux-image-6.1.0-9-amd64"])
    assert [c.components for c in plan.chunks] == [("a", "b", "c"), ("linux-image-6.1.0-9-amd64",)]
    assert plan.chunks[0].name == "3 components"
    assert plan.remainder == (objects[-1].checksum,)
    plan = chunking.plan_chunks({o.checksum: o for o in objects}, owners, 2)
    assert plan.chunks[0].components == ("a", "b", "c", "kernel")  # one slot: together


def _unchanged(before: chunking.ChunkPlan, after: chunking.ChunkPlan) -> int:
    return len({c.components for c in before.chunks} & {c.components for c in after.chunks})


@pytest.mark.parametrize("victim", ["pkg010", "pkg100", "pkg190"])
def test_packing_is_stable_when_packages_change(victim: str) -> None:
    spec = {f"pkg{i:03d}": 50_000 + (i * 104729) % 50_000 for i in range(200)}
    before = chunking.plan_chunks(_objects(spec), _owners(spec), 30)
    assert 15 <= len(before.chunks) <= 29
    grown = spec | {victim: spec[victim] + 5_000}
    assert (
        _unchanged(before, chunking.plan_chunks(_objects(grown), _owners(grown), 30))
        >= len(before.chunks) - 2
    )
    added = spec | {victim + "-new": 70_000}
    assert (
        _unchanged(before, chunking.plan_chunks(_objects(added), _owners(added), 30))
        >= len(before.chunks) - 2
    )
    removed = {k: v for k, v in spec.items() if k != victim}
    plan = chunking.plan_chunks(_objects(removed), _owners(removed), 30)
    assert _unchanged(before, plan) >= len(before.chunks) - 2


def test_chunk_names() -> None:
    assert chunking.chunk_name(("a",)) == "a"
    assert chunking.chunk_name(("a", "b")) == "a and b"
    assert chunking.chunk_name(("a", "b", "c")) == "3 components"


@pytest.mark.parametrize(
    ("text", "transport", "path", "tag"),
    [
        ("oci:/x/y", Transport.OCI, "/x/y", "latest"),
        ("oci:/x/y:v1", Transport.OCI, "/x/y", "v1"),
        (
            "oci-archive:/x/y.tar:registry.invalid/os:1.0",
            Transport.OCI_ARCHIVE,
            "/x/y.tar",
            "registry.invalid/os:1.0",
        ),
    ],
)
def test_parse_destination(text: str, transport: Transport, path: str, tag: str) -> None:
    dest = parse_destination(text)
    assert (dest.transport, str(dest.path), dest.tag) == (transport, path, tag)
    assert dest.reference == f"{transport}:{path}:{tag}"


def test_parse_destination_relative_and_bad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        parse_destination("oci-archive:out/../x.ociarchive").reference
        == f"oci-archive:{tmp_path}/x.ociarchive:latest"
    )
    (tmp_path / "notlayout").mkdir()
    (tmp_path / "notlayout/file").write_text("x")
    for bad in (
        "docker://registry.invalid/x",
        "oci",
        "oci:",
        "oci:x:bad tag!",
        "oci:notlayout",
        f"oci-archive:{tmp_path}",
    ):
        with pytest.raises(DestinationError):
            parse_destination(bad)


def test_tar_stream_is_readable_and_fixed() -> None:
    out = io.BytesIO()
    tar = TarStream(out)
    tar.add_dir("./")
    tar.add_bytes("a/file", b"hello")
    long = "sysroot/ostree/repo/objects/ab/" + "c" * 62 + ".file-xattrs-link"
    tar.add(long, tarfile.LNKTYPE, mode=0o644, linkname="a/file", pax={"SCHILY.xattr.user.x": "\udcff\x00v"})
    tar.add("a/link", tarfile.SYMTYPE, mode=0o777, linkname="file")
    tar.close()
    data = out.getvalue()
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        members = t.getmembers()
        assert [m.name for m in members] == [".", "a/file", long, "a/link"]
        assert members[2].linkname == "a/file" and members[3].linkname == "file"
        assert all(m.mtime == 0 and m.uname == "" for m in members)
        f = t.extractfile("a/file")
        assert f is not None and f.read() == b"hello"
    with pytest.raises(ValueError):
        TarStream(io.BytesIO()).add("x", tarfile.REGTYPE, mode=0o644, size=3, data=[b"ab"])


def test_layer_blob_digests(tmp_path: Path) -> None:
    layout = OciLayoutWriter(tmp_path / "oci")
    writer = layout.layer()
    tar = TarStream(writer)
    tar.add_bytes("f", b"x" * 100_000)
    tar.close()
    descriptor, diff_id = writer.finish({"k": "v"})
    blob = (tmp_path / "oci/blobs/sha256" / descriptor.digest[7:]).read_bytes()
    assert descriptor.size == len(blob) and descriptor.annotations == {"k": "v"}
    assert diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    assert blob[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert [p.name for p in (tmp_path / "oci/blobs/sha256").iterdir()] == [descriptor.digest[7:]]
