"""Write an ostree commit as an ostree-native OCI image in the current chunked ("v1") layout.

Layer 0 carries the commit: the repository skeleton, the commit object, every dirtree/dirmeta object with a
tar directory entry per directory, and the content objects no chunk takes. Each further layer carries the
same skeleton and its chunk's content objects, each one as `sysroot/ostree/repo/objects/XX/Y.file` (its
xattrs split out as `.file-xattrs` + `.file-xattrs-link`) followed by a hard link per path, so that the tar
both imports as an ostree repository and unpacks as a plain root filesystem (research/ostree.md §1.1-1.3).

Everything is deterministic (sorted walks, mtime 0, fixed gzip): the same commit gives the same digests.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import logging
import os
import struct
import tarfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.arch import Arch
from builder.errors import ImgbuildError
from builder.oci import writer as oci
from builder.ostree import chunking
from builder.ostree.gi import GLib, OSTree, open_repo

log = logging.getLogger(__name__)

PARALLEL_LAYERS = 2  # layers compressed at once (the build machines have two cores)
MAX_LAYERS_LIMIT = 127  # overlayfs-based runtimes stack at most this many layers
REPO_CONFIG = b"[core]\nrepo_version=1\nmode=bare-split-xattrs\n"
OBJECTS = "sysroot/ostree/repo/objects"
REPO_SUBDIRS = (
    "extensions",
    "refs",
    "refs/heads",
    "refs/mirrors",
    "refs/remotes",
    "state",
    "tmp",
    "tmp/cache",
)
SELINUX_XATTR = "security.selinux"
COMPONENTS_ANNOTATION = "ostree.components"
RESERVED_LABELS = frozenset({"ostree.commit", "ostree.final-diffid"})


class EncapsulateError(ImgbuildError):
    """The commit cannot be encapsulated (no such repository or rev, bad options)."""


@dataclass(frozen=True)
class EncapsulatedLayer:
    digest: str
    diff_id: str
    size: int  # of the gzip blob
    name: str  # the history entry: commit subject for layer 0, the chunk name for the others
    components: tuple[str, ...]


@dataclass(frozen=True)
class EncapsulateResult:
    manifest_digest: str
    config_digest: str
    reference: str  # the destination, normalised: oci-archive:/abs/x.ociarchive:latest
    commit: str
    layers: tuple[EncapsulatedLayer, ...]


@dataclass(frozen=True)
class _Dir:
    """A directory met in the walk: its objects, and its tar entry unless it is the top-level sysroot."""

    tar_path: str | None
    dirtree: str
    dirmeta: str
    uid: int
    gid: int
    mode: int


def object_path(checksum: str, suffix: str) -> str:
    return f"{OBJECTS}/{checksum[:2]}/{checksum[2:]}.{suffix}"


def tar_path(path: str) -> str:
    """A commit path as the tar stream spells it: /usr/etc is /etc again."""
    if path == "usr/etc" or path.startswith("usr/etc/"):
        return path[4:]
    return path


def _variant_bytes(variant: Any) -> bytes:
    return bytes(variant.get_data_as_bytes().get_data())


def _checksum(variant: Any) -> str:
    return str(OSTree.checksum_from_bytes_v(variant))


class _Commit:
    """A resolved commit: its objects walked once, in ostree's (sorted) dirtree order."""

    def __init__(self, repo: Any, checksum: str) -> None:
        self.repo = repo
        self.checksum = checksum
        _, self.variant, state = repo.load_commit(checksum)
        if int(state) & int(OSTree.RepoCommitState.PARTIAL):
            raise EncapsulateError(
                f"commit {checksum} is partial (objects missing)", hint="pull it completely"
            )
        self.metadata: dict[str, Any] = self.variant.get_child_value(0).unpack()
        self.subject: str = self.variant.get_child_value(3).get_string()
        self.timestamp = int(OSTree.commit_get_timestamp(self.variant))
        self.root_tree = _checksum(self.variant.get_child_value(6))
        self.root_meta = _checksum(self.variant.get_child_value(7))
        self._dirmeta_cache: dict[str, tuple[int, int, int]] = {}
        self.dirs: list[_Dir] = []
        self.paths: dict[str, list[str]] = {}  # content checksum -> paths (sysroot/ paths excluded)
        self.has_var_tmp = False
        self._walk("", self.root_tree)

    def dirmeta(self, checksum: str) -> tuple[int, int, int]:
        """(uid, gid, mode) of a dirmeta object: three big-endian u32 at the start of (uuua(ayay))."""
        cached = self._dirmeta_cache.get(checksum)
        if cached is None:
            data = self.load_metadata(OSTree.ObjectType.DIR_META, checksum)
            cached = self._dirmeta_cache[checksum] = struct.unpack(">III", data[:12])
        return cached

    def load_metadata(self, kind: Any, checksum: str) -> bytes:
        _, variant = self.repo.load_variant(kind, checksum)
        return _variant_bytes(variant)

    def _walk(self, prefix: str, dirtree: str) -> None:
        _, tree = self.repo.load_variant(OSTree.ObjectType.DIR_TREE, dirtree)
        files, subdirs = tree.get_child_value(0), tree.get_child_value(1)
        in_sysroot = prefix == "sysroot/" or prefix.startswith("sysroot/")
        for i in range(files.n_children()):
            entry = files.get_child_value(i)
            paths = self.paths.setdefault(_checksum(entry.get_child_value(1)), [])
            if not in_sysroot:  # the tar has the image's repository there: keep the objects, not the paths
                paths.append(prefix + entry.get_child_value(0).get_string())
        for i in range(subdirs.n_children()):
            entry = subdirs.get_child_value(i)
            name = entry.get_child_value(0).get_string()
            tree_sum = _checksum(entry.get_child_value(1))
            meta_sum = _checksum(entry.get_child_value(2))
            uid, gid, mode = self.dirmeta(meta_sum)
            path = prefix + name
            entry_path = None if (path == "sysroot" or in_sysroot) else "./" + tar_path(path)
            self.dirs.append(_Dir(entry_path, tree_sum, meta_sum, uid, gid, mode))
            self.has_var_tmp = self.has_var_tmp or path == "var/tmp"
            self._walk(path + "/", tree_sum)


class _LayerExport:
    """Writes ostree objects into one layer's tar stream, each xattrs object once per layer."""

    def __init__(self, commit: _Commit, tar: oci.TarStream) -> None:
        self.commit = commit
        self.repo = commit.repo
        self.tar = tar
        self.wrote_xattrs: set[str] = set()
        self.wrote_metadata: set[str] = set()

    def skeleton(self) -> None:
        repo = "sysroot/ostree/repo"
        for d in ("sysroot", "sysroot/ostree", repo, OBJECTS):
            self.tar.add_dir(d)
        for i in range(256):
            self.tar.add_dir(f"{OBJECTS}/{i:02x}")
        for d in REPO_SUBDIRS:
            self.tar.add_dir(f"{repo}/{d}")
        self.tar.add_bytes(f"{repo}/config", REPO_CONFIG)

    def metadata(self, kind: Any, suffix: str, checksum: str) -> None:
        key = f"{checksum}.{suffix}"
        if key not in self.wrote_metadata:
            self.wrote_metadata.add(key)
            self.tar.add_bytes(object_path(checksum, suffix), self.commit.load_metadata(kind, checksum))

    def structure(self) -> None:
        """The commit layer's first part: root, skeleton, commit, then every directory."""
        c = self.commit
        uid, gid, mode = c.dirmeta(c.root_meta)
        self.tar.add_dir("./", mode, uid, gid)
        self.skeleton()
        self.tar.add_bytes(object_path(c.checksum, "commit"), _variant_bytes(c.variant))
        _, detached = self.repo.read_commit_detached_metadata(c.checksum, None)
        if detached is not None:
            self.tar.add_bytes(object_path(c.checksum, "commitmeta"), _variant_bytes(detached))
        self.metadata(OSTree.ObjectType.DIR_META, "dirmeta", c.root_meta)
        self.metadata(OSTree.ObjectType.DIR_TREE, "dirtree", c.root_tree)
        for d in c.dirs:
            self.metadata(OSTree.ObjectType.DIR_META, "dirmeta", d.dirmeta)
            if d.tar_path is not None:
                self.tar.add_dir(d.tar_path, d.mode, d.uid, d.gid)
            self.metadata(OSTree.ObjectType.DIR_TREE, "dirtree", d.dirtree)
        if not c.has_var_tmp:
            self.tar.add_dir("var/tmp", 0o1777)

    def content(self, checksum: str, paths: Iterable[str]) -> None:
        _, stream, info, xattrs = self.repo.load_file(checksum, None)
        raw_xattrs = _variant_bytes(xattrs) if xattrs is not None else b""
        xattrs_sum = hashlib.sha256(raw_xattrs).hexdigest()
        xattrs_path = object_path(xattrs_sum, "file-xattrs")
        if xattrs_sum not in self.wrote_xattrs:
            self.wrote_xattrs.add(xattrs_sum)
            self.tar.add_bytes(xattrs_path, raw_xattrs)
        self.tar.add(
            object_path(checksum, "file-xattrs-link"), tarfile.LNKTYPE, mode=0o644, linkname=xattrs_path
        )
        uid = info.get_attribute_uint32("unix::uid")
        gid = info.get_attribute_uint32("unix::gid")
        mode = info.get_attribute_uint32("unix::mode")
        pax = _pax_xattrs(xattrs)
        path = object_path(checksum, "file")
        if stream is not None:
            size = info.get_size()
            data = _read_stream(stream)
            self.tar.add(path, tarfile.REGTYPE, mode=mode, uid=uid, gid=gid, size=size, pax=pax, data=data)
        else:
            size = -1
            target = info.get_symlink_target()
            self.tar.add(path, tarfile.SYMTYPE, mode=mode, uid=uid, gid=gid, linkname=target, pax=pax)
        # An empty file stays a file, not a link: a derived layer that rewrites it must not touch the object.
        kind, link = (tarfile.REGTYPE, "") if size == 0 else (tarfile.LNKTYPE, path)
        for p in paths:
            self.tar.add(tar_path(p), kind, mode=mode, uid=uid, gid=gid, linkname=link, pax=pax)


def _read_stream(stream: Any) -> Iterator[bytes]:
    try:
        while True:
            chunk = stream.read_bytes(oci.COPY_CHUNK, None).get_data()
            if not chunk:
                return
            yield bytes(chunk)
    finally:
        stream.close(None)


def _pax_xattrs(xattrs: Any) -> dict[str, str]:
    """SCHILY.xattr.* records for every xattr but security.selinux (runtimes cannot apply it anyway)."""
    pax: dict[str, str] = {}
    if xattrs is None:
        return pax
    for i in range(xattrs.n_children()):
        entry = xattrs.get_child_value(i)
        name = _variant_bytes(entry.get_child_value(0)).rstrip(b"\0").decode("utf-8", "surrogateescape")
        if name != SELINUX_XATTR:
            value = _variant_bytes(entry.get_child_value(1))
            pax[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return pax


def _resolve(repo_path: Path, rev: str) -> tuple[Any, str]:
    try:
        repo = open_repo(repo_path)
    except GLib.Error as e:
        raise EncapsulateError(
            f"cannot open the ostree repository {repo_path}: {e.message}", hint="pass --repo DIR"
        ) from e
    try:
        _, checksum = repo.resolve_rev(rev, False)
        repo.load_commit(checksum)
    except GLib.Error as e:
        raise EncapsulateError(
            f"{rev!r} is not a ref or commit of {repo_path}",
            hint=f"list them: ostree refs --repo={repo_path}",
        ) from e
    return repo, str(checksum)


def _read_file(commit: _Commit, checksum: str) -> str:
    _, stream, _, _ = commit.repo.load_file(checksum, None)
    return b"".join(_read_stream(stream)).decode("utf-8", "replace") if stream is not None else ""


def kernel_version(metadata: Mapping[str, Any], paths: Mapping[str, str]) -> str | None:
    value = metadata.get("ostree.linux")
    if isinstance(value, str) and value:
        return value
    found = sorted(
        parts[3]
        for parts in (p.split("/") for p in paths)
        if len(parts) == 5 and parts[:3] == ["usr", "lib", "modules"] and parts[4] == "vmlinuz"
    )
    return found[-1] if found else None


def detect_arch(metadata: Mapping[str, Any], kver: str | None, paths: Mapping[str, str]) -> Arch:
    """From commit metadata, else the kernel version's suffix, else the dynamic loader, else the host."""
    for key in ("ostree.architecture", "coreos-assembler.basearch"):
        value = metadata.get(key)
        if isinstance(value, str):
            return Arch.parse(value)
    if kver:
        for token in reversed(kver.replace("-", ".").split(".")):
            if token in ("x86_64", "amd64", "aarch64", "arm64"):
                return Arch.parse(token)
    for arch, loader in ((Arch.X86_64, "ld-linux-x86-64.so.2"), (Arch.AARCH64, "ld-linux-aarch64.so.1")):
        if any(p.endswith("/" + loader) for p in paths):
            return arch
    return Arch.host()


def _labels(commit: _Commit, kver: str | None, extra: Mapping[str, str]) -> dict[str, str]:
    meta = commit.metadata
    labels = {"ostree.commit": commit.checksum}
    version = meta.get("version")
    if isinstance(version, str):
        labels["version"] = labels["org.opencontainers.image.version"] = version
    if meta.get("ostree.bootable"):
        labels["ostree.bootable"] = "true"
        labels["containers.bootc"] = "1"
    if kver:
        labels["ostree.linux"] = kver
    labels.update(extra)
    return labels


def _rfc3339(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encapsulate(
    repo: Path,
    rev: str,
    dest: str,
    *,
    max_layers: int = 64,
    extra_labels: Mapping[str, str] | None = None,
    arch: Arch | None = None,
) -> EncapsulateResult:
    """Write commit `rev` of `repo` as an image to `dest` (oci:DIR[:TAG] or oci-archive:FILE[:TAG])."""
    destination = oci.parse_destination(dest)
    if not 1 <= max_layers <= MAX_LAYERS_LIMIT:
        raise EncapsulateError(f"--max-layers must be 1..{MAX_LAYERS_LIMIT}, not {max_layers}")
    extra = dict(extra_labels or {})
    if reserved := RESERVED_LABELS & extra.keys():
        raise EncapsulateError(f"label {sorted(reserved)[0]} is set by imgbuild itself", hint="drop it")
    ostree_repo, checksum = _resolve(repo, rev)
    try:
        commit = _Commit(ostree_repo, checksum)
        by_path = {p: s for s, paths in commit.paths.items() for p in paths}
        owners = chunking.package_owners(by_path, lambda object_sum: _read_file(commit, object_sum))
        objects = {
            s: chunking.ContentObject(s, _storage_size(ostree_repo, s), tuple(sorted(paths)))
            for s, paths in commit.paths.items()
        }
    except GLib.Error as e:
        raise EncapsulateError(f"cannot read commit {checksum}: {e.message}", hint=_FSCK_HINT) from e
    kver = kernel_version(commit.metadata, by_path)
    image_arch = arch or detect_arch(commit.metadata, kver, by_path)
    kernel_packages = {p for ps in owners.values() for p in ps if chunking.is_kernel_package(p)}
    plan = chunking.plan_chunks(objects, owners, max_layers, kernel_packages)
    log.info(
        "encapsulating %s: %d content objects, %d packages, %d layers",
        checksum,
        len(objects),
        len({p for ps in owners.values() for p in ps}),
        1 + len(plan.chunks),
    )
    labels = _labels(commit, kver, extra)
    config_json: dict[str, Any] = {}
    cmd = commit.metadata.get("ostree.container-cmd")
    if isinstance(cmd, list) and all(isinstance(a, str) for a in cmd):
        config_json["Cmd"] = cmd
    created = _rfc3339(commit.timestamp)
    config = {"architecture": image_arch.oci, "os": "linux", "created": created, "config": config_json}

    subject = commit.subject or f"ostree export of commit {checksum}"
    jobs = [_LayerJob(plan.remainder, True, subject, ())]
    jobs += [_LayerJob(c.objects, False, c.name, c.components) for c in plan.chunks]
    try:
        with oci.open_destination(destination) as layout:
            manifest, config_digest, layers = _write_image(layout, commit, objects, jobs, labels, config)
            layout.tag(manifest, destination.tag)
    except OSError as e:  # no space, no permission: nothing is left behind, and the user can act on it
        raise oci.DestinationError(
            f"cannot write {destination.reference}: {e.strerror or e}",
            hint="check the free space and the permissions where the image goes",
        ) from e
    return EncapsulateResult(manifest.digest, config_digest, destination.reference, checksum, tuple(layers))


def _write_image(
    layout: oci.OciLayoutWriter,
    commit: _Commit,
    objects: Mapping[str, chunking.ContentObject],
    jobs: list[_LayerJob],
    labels: Mapping[str, str],
    config: dict[str, Any],
) -> tuple[oci.Descriptor, str, list[EncapsulatedLayer]]:
    """The layers, then the config (`config` completed with what the layers give) and the manifest."""
    written = _write_layers(layout, commit, objects, jobs)
    layers = [layer for _, layer in written]
    labels = {**labels, "ostree.final-diffid": layers[-1].diff_id}
    config["config"]["Labels"] = labels
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    config["history"] = [{"created": config["created"], "created_by": layer.name} for layer in layers]
    config_bytes = oci.canonical_json(config)
    manifest = layout.add_manifest(config_bytes, [descriptor for descriptor, _ in written], labels)
    return manifest, "sha256:" + hashlib.sha256(config_bytes).hexdigest(), layers


_FSCK_HINT = "the repository is damaged: check it with `ostree fsck`"


def _storage_size(repo: Any, checksum: str) -> int:
    _, size = repo.query_object_storage_size(OSTree.ObjectType.FILE, checksum, None)
    return int(size)


@dataclass(frozen=True)
class _LayerJob:
    objects: tuple[str, ...]  # in the order they are written
    structure: bool  # the commit layer
    name: str
    components: tuple[str, ...]


def _write_layers(
    layout: oci.OciLayoutWriter,
    commit: _Commit,
    objects: Mapping[str, chunking.ContentObject],
    jobs: list[_LayerJob],
) -> list[tuple[oci.Descriptor, EncapsulatedLayer]]:
    """Write the layers, two at a time: gzip is most of the work and zlib runs outside the GIL."""
    stop = threading.Event()
    workers = max(1, min(PARALLEL_LAYERS, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="layer") as pool:
        futures = [pool.submit(_write_layer, layout, commit, objects, job, stop) for job in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()
            raise


def _write_layer(
    layout: oci.OciLayoutWriter,
    commit: _Commit,
    objects: Mapping[str, chunking.ContentObject],
    job: _LayerJob,
    stop: threading.Event,
) -> tuple[oci.Descriptor, EncapsulatedLayer]:
    writer = layout.layer()
    try:
        tar = oci.TarStream(writer)
        export = _LayerExport(commit, tar)
        try:
            if job.structure:
                export.structure()
            else:
                export.skeleton()
            for checksum in job.objects:
                if stop.is_set():
                    raise EncapsulateError("encapsulation stopped")
                export.content(checksum, objects[checksum].paths)
        except GLib.Error as e:
            raise EncapsulateError(
                f"cannot read an object of commit {commit.checksum}: {e.message}", hint=_FSCK_HINT
            ) from e
        tar.close()
        annotations = {COMPONENTS_ANNOTATION: ",".join(job.components)} if job.components else {}
        descriptor, diff_id = writer.finish(annotations)
        layer = EncapsulatedLayer(descriptor.digest, diff_id, descriptor.size, job.name, job.components)
        return descriptor, layer
    except BaseException:
        writer.abort()
        raise
