"""Test helpers: read OCI layouts into `Image` records, and write small ostree-native images.

The images written here follow the tar layouts of research/ostree.md §1.3 (v1 "chunked") byte for byte in
the parts importers rely on, from commits the tests make themselves.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.arch import Arch
from builder.ostree.gi import Gio, GLib, OSTree, open_repo
from builder.source.classify import build_layers, classify
from builder.source.image import Image
from builder.source.oci import parse_config, parse_index, parse_manifest

DEFAULT_ARCH = Arch.host()


def image_from_oci_dir(layout: Path, reference: str | None = None) -> Image:
    """The Image of the single manifest in the OCI layout directory `layout` (no verification here:
    open_layer verifies each layer as it is read)."""
    blobs = layout / "blobs"
    (descriptor,) = parse_index((layout / "index.json").read_bytes())
    manifest_bytes = (blobs / "sha256" / descriptor.digest.split(":", 1)[1]).read_bytes()
    manifest = parse_manifest(manifest_bytes)
    config_bytes = (blobs / "sha256" / manifest.config.digest.split(":", 1)[1]).read_bytes()
    config = parse_config(config_bytes)
    cls = classify(config.labels, config.diff_ids)
    layers = build_layers(manifest, config, cls.roles, source=str(layout))
    return Image(
        reference=reference or f"oci:{layout}",
        manifest_digest=descriptor.digest,
        manifest=manifest_bytes,
        config=config_bytes,
        architecture=Arch.parse(config.architecture),
        labels=dict(config.labels),
        layout=cls.layout,
        layers=layers,
        ostree_commit=cls.ostree_commit,
        blob_dir=blobs,
        created=config.created,
    )


def unpack_oci_archive(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tf:
        tf.extractall(dest)  # trusted fixtures; this Python has no extraction filters
    return dest


# --- writing images ---


@dataclass(frozen=True)
class BlobLayer:
    digest: str
    diff_id: str
    size: int


def write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def add_gzip_layer(layout: Path, tar_bytes: bytes) -> BlobLayer:
    compressed = gzip.compress(tar_bytes, mtime=0)
    return BlobLayer(
        write_blob(layout, compressed), f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}", len(compressed)
    )


def write_oci_image(
    layout: Path, layers: Sequence[BlobLayer], labels: dict[str, str], *, created: str | None = None
) -> Path:
    """An OCI layout with one manifest over `layers` (gzip tar)."""
    config: dict[str, Any] = {
        "architecture": DEFAULT_ARCH.oci,
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    if created:
        config["created"] = created
    config_bytes = json.dumps(config).encode()
    config_digest = write_blob(layout, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": x.digest, "size": x.size}
            for x in layers
        ],
        "annotations": labels,
    }
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = write_blob(layout, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout


class TarWriter:
    """An in-memory tar for small test layers."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def add(self, info: tarfile.TarInfo, data: bytes | None = None) -> None:
        if data is not None:
            info.size = len(data)
        self.tf.addfile(info, io.BytesIO(data) if data is not None else None)

    def file(self, name: str, data: bytes, mode: int = 0o644, *, uid: int = 0, gid: int = 0) -> None:
        info = tarfile.TarInfo(name)
        info.mode, info.uid, info.gid = mode, uid, gid
        self.add(info, data)

    def dir(self, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        self.add(info)

    def link(self, name: str, target: str, *, symlink: bool, mtime: int = 0) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE if symlink else tarfile.LNKTYPE
        info.linkname, info.mode, info.mtime = target, 0o777 if symlink else 0o644, mtime
        self.add(info)

    def special(self, name: str, kind: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.devmajor, info.devminor = kind, 1, 3
        self.add(info)

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


# --- v1 (chunked) ostree layers written from a repository commit, per research §1.3 ---

REPO = "sysroot/ostree/repo"


def _objpath(checksum: str, suffix: str) -> str:
    return f"{REPO}/objects/{checksum[:2]}/{checksum[2:]}.{suffix}"


def _raw(repo: Any, objtype: Any, checksum: str) -> bytes:
    _, variant = repo.load_variant(objtype, checksum)
    return bytes(variant.get_data_as_bytes().get_data())


def commit_objects(repo: Any, commit: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(metadata objects as (checksum, suffix) in the v1 order, content checksums) of `commit`."""
    metadata: list[tuple[str, str]] = [(commit, "commit")]
    content: list[str] = []
    _, commitv, _ = repo.load_commit(commit)
    root_tree = OSTree.checksum_from_bytes(commitv[6])
    root_meta = OSTree.checksum_from_bytes(commitv[7])
    metadata.append((root_meta, "dirmeta"))

    def walk(tree: str) -> None:
        metadata.append((tree, "dirtree"))
        _, treev = repo.load_variant(OSTree.ObjectType.DIR_TREE, tree)
        files, dirs = treev.unpack()
        for _name, csum in files:
            content.append(bytes(csum).hex())
        for _name, sub_tree, sub_meta in dirs:
            metadata.append((bytes(sub_meta).hex(), "dirmeta"))
            walk(bytes(sub_tree).hex())

    walk(root_tree)
    return metadata, list(dict.fromkeys(content))


def _append_content(tw: TarWriter, repo: Any, checksum: str, written_xattrs: set[str]) -> None:
    _, stream, info, xattrs = repo.load_file(checksum, None)
    xattrs_bytes = bytes(xattrs.get_data_as_bytes().get_data()) if xattrs is not None else b""
    xdigest = hashlib.sha256(xattrs_bytes).hexdigest()
    xpath = _objpath(xdigest, "file-xattrs")
    if xdigest not in written_xattrs:
        tw.file(xpath, xattrs_bytes)
        written_xattrs.add(xdigest)
    tw.link(_objpath(checksum, "file-xattrs-link"), xpath, symlink=False)
    entry = tarfile.TarInfo(_objpath(checksum, "file"))
    entry.uid, entry.gid = info.get_attribute_uint32("unix::uid"), info.get_attribute_uint32("unix::gid")
    entry.mode = info.get_attribute_uint32("unix::mode") & 0o7777
    if info.get_file_type() == Gio.FileType.SYMBOLIC_LINK:
        entry.type, entry.linkname = tarfile.SYMTYPE, info.get_symlink_target()
        tw.add(entry)
    else:
        data = stream.read_bytes(info.get_size(), None).get_data() if info.get_size() else b""
        tw.add(entry, bytes(data))


def v1_layers_from_commit(repo_path: Path, commit: str, chunks: int) -> list[bytes]:
    """Tar layers (commit layer first, then `chunks` chunk layers) carrying `commit`, v1 layout."""
    repo = open_repo(repo_path)
    metadata, content = commit_objects(repo, commit)
    groups: list[list[str]] = [content[i :: chunks + 1] for i in range(chunks + 1)]
    layers: list[bytes] = []
    for index, group in enumerate(groups):
        tw = TarWriter()
        tw.dir("./")
        tw.file(f"{REPO}/config", b"[core]\nrepo_version=1\nmode=bare-split-xattrs\n")
        if index == 0:
            for checksum, suffix in metadata:
                tw.file(_objpath(checksum, suffix), _raw(repo, _suffix_type(suffix), checksum))
        written: set[str] = set()
        for checksum in group:
            _append_content(tw, repo, checksum, written)
        layers.append(tw.bytes())
    return layers


def _suffix_type(suffix: str) -> Any:
    return {
        "commit": OSTree.ObjectType.COMMIT,
        "dirtree": OSTree.ObjectType.DIR_TREE,
        "dirmeta": OSTree.ObjectType.DIR_META,
    }[suffix]


def make_test_commit(repo_path: Path, tree: Path, *, branch: str = "test/base") -> str:
    """Commit the directory `tree` into `repo_path` (bare-user or bare) with the ostree CLI."""
    from builder import run

    out = run.run(
        [
            "ostree",
            "commit",
            f"--repo={repo_path}",
            f"--branch={branch}",
            f"--tree=dir={tree}",
            "--add-metadata-string=version=1.0",
        ]
    ).out
    return out.strip()


def variant_bytes(v: Any) -> bytes:
    return bytes(GLib.Variant.get_data_as_bytes(v).get_data())
