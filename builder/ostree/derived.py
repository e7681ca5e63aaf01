"""Filter a derived (non-ostree) layer and commit it to the repository, as ostree-ext does.

A derived layer is an ordinary container layer (podman/buildah RUN, COPY) and untrusted input. Its tar
stream is re-written entry by entry into a PAX tar that `ostree commit --tree=tar=` reads from a pipe:
nothing is ever extracted on the host, so a tar entry is only ever a path inside the image. Rules
(research/ostree.md §1.4, ostree-ext `normalize_validate_path`):

- paths are normalised and made relative; `..` anywhere is refused (ImportFailure naming layer and path);
- `etc` becomes `usr/etc` (hardlink targets too), since ostree keeps /etc defaults in /usr/etc;
- `var` becomes `usr/share/factory/var`: libostree here (2022.7) is older than 2024.3, which would seed
  the stateroot's /var from the commit; the factory copy is what systemd-tmpfiles copies in at first boot;
- `run tmp proc sys dev`: the directory stays, its children are dropped (API filesystems);
- any other top level (opt, boot, home, sysroot...) is dropped and counted per top level, for the
  `ostree.tar-filtered` metadata of the merge commit — unless the image has no ostree base at all;
- device nodes and fifos are dropped (never created), with a warning;
- an entry below a path this layer made a symlink is refused: it would be written "through" the link;
- a hardlink whose target is not an earlier entry of this layer is refused;
- whiteouts (`.wh.NAME`, `.wh..wh..opq`) are kept as plain files: the merge checkout processes them.

A special case kept from ostree-ext: a derived layer made on an ostree-based image may carry a modified
(mtime > 0) file under `sysroot/ostree/repo/` followed by hardlinks to it from the real paths (overlayfs
copied the hardlinked object up). The first such hardlink becomes the file, later ones link to it.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from builder import __version__, run
from builder.errors import CommandFailed, ImportFailure

log = logging.getLogger(__name__)

EXCLUDED_TOPLEVEL = frozenset({"run", "tmp", "proc", "sys", "dev"})
FACTORY_VAR = "usr/share/factory/var"
SYSROOT_REPO = "sysroot/ostree/repo/"
WHITEOUT = ".wh."


@dataclass(frozen=True)
class FilterConfig:
    allow_nonusr: bool = False  # an image with no ostree base keeps every top level
    remap_factory_var: bool = True  # libostree < 2024.3 does not seed /var from the commit


@dataclass
class FilterResult:
    filtered: Counter[str] = field(default_factory=Counter)  # top level -> entries dropped
    dropped_special: int = 0  # device nodes, fifos


class _Filter:
    def __init__(self, layer: str, config: FilterConfig, tmpdir: Path) -> None:
        self.layer = layer
        self.config = config
        self.tmpdir = tmpdir
        self.result = FilterResult()
        self.entries: set[str] = set()  # normalised paths written (hardlink targets must be among them)
        self.symlinks: set[str] = set()
        self.dirs: set[str] = set()
        self.filtered_paths: set[str] = set()  # normalised paths dropped (a link to one is dropped too)
        self.sysroot_files: dict[str, tuple[tarfile.TarInfo, IO[bytes]]] = {}
        self.sysroot_relinks: dict[str, str] = {}

    def refuse(self, path: str, why: str) -> ImportFailure:
        return ImportFailure(
            f"layer {self.layer}: refusing {path!r}: {why}",
            hint="the derived layer is malformed or hostile; rebuild the image without it",
        )

    def normalize(self, raw: str) -> tuple[str | None, str]:
        """(normalised path or None if dropped, top level)."""
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(raw, "path contains '..'")
        if not parts:
            return None, ""
        top = parts[0]
        if top == "usr":
            pass
        elif top == "etc":
            parts[0:1] = ["usr", "etc"]
        elif top == "var":
            if self.config.remap_factory_var:
                parts[0:1] = FACTORY_VAR.split("/")
        elif top in EXCLUDED_TOPLEVEL:
            if len(parts) > 1:
                return None, top
        elif not self.config.allow_nonusr:
            return None, top
        return "/".join(parts), top

    def check_placement(self, name: str, path: str, is_dir: bool) -> None:
        """Refuse an entry below a symlink or file of this layer, or one swapping file and directory:
        the first would write through the link, and libostree cannot build either."""
        parent = posixpath.dirname(path)
        while parent:
            if parent in self.symlinks:
                raise self.refuse(name, f"it would be written through the symlink {parent}")
            if parent in self.entries and parent not in self.dirs:
                raise self.refuse(name, f"it would be written below the file {parent}")
            parent = posixpath.dirname(parent)
        if path in self.entries and is_dir != (path in self.dirs):
            raise self.refuse(name, "a directory and a file of the same layer at one path")

    def drop(self, path: str | None, top: str) -> None:
        if path is not None:
            self.filtered_paths.add(path)
        self.result.filtered[top] += 1

    def copy(self, src: tarfile.TarFile, out: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        if member.ischr() or member.isblk() or member.isfifo():
            log.warning("layer %s: dropping device node or fifo %s", self.layer, name)
            self.result.dropped_special += 1
            return
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise self.refuse(name, f"unsupported tar entry type {member.type!r}")
        bare = name.lstrip("/").removeprefix("./")
        if member.isreg() and member.mtime > 0 and bare.startswith(SYSROOT_REPO):
            self.keep_sysroot_file(src, member, bare)
            return
        if member.islnk() and member.mtime > 0:
            target = member.linkname.lstrip("/").removeprefix("./")
            if target.startswith(SYSROOT_REPO) and self.sysroot_link(out, member, target):
                return
        path, top = self.normalize(name)
        if path is None:
            if top:
                self.drop(None, top)
            return
        self.check_placement(name, path, member.isdir())
        if posixpath.basename(path).removeprefix(WHITEOUT) in ("", ".", ".."):
            # The merge checkout would remove "." or ".." of the whiteout's directory.
            raise self.refuse(name, "a whiteout of '.' or '..'")
        info = self.clean_info(member, path)
        if member.islnk():
            link_to, _ = self.normalize(member.linkname)
            if link_to is None or link_to in self.filtered_paths:
                self.drop(path, top)
                return
            if link_to not in self.entries:
                raise self.refuse(name, f"hardlink to {member.linkname!r}, which is not in this layer")
            info.linkname = link_to
        if member.issym():
            self.symlinks.add(path)
        else:
            self.symlinks.discard(path)
        self.entries.add(path)
        if member.isdir():
            self.dirs.add(path)
        out.addfile(info, src.extractfile(member) if member.isreg() else None)

    def clean_info(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type = tarfile.REGTYPE if member.isreg() else member.type
        info.mode = member.mode & 0o7777
        info.uid, info.gid = member.uid, member.gid
        info.uname = info.gname = ""
        info.mtime = member.mtime
        info.size = member.size if member.isreg() else 0
        if member.issym():
            info.linkname = member.linkname  # symlink targets are data, never resolved here
        # PAX records carry xattrs (SCHILY.xattr.*, security.capability...); drop the path ones.
        info.pax_headers = {
            k: v for k, v in member.pax_headers.items() if k not in ("path", "linkpath", "size")
        }
        return info

    def keep_sysroot_file(self, src: tarfile.TarFile, member: tarfile.TarInfo, bare: str) -> None:
        data = src.extractfile(member)
        assert data is not None
        spool = tempfile.TemporaryFile(dir=self.tmpdir)  # noqa: SIM115 - kept until its hardlink comes; close()
        shutil.copyfileobj(data, spool, 1024 * 1024)
        spool.seek(0)
        old = self.sysroot_files.pop(bare, None)
        if old is not None:
            old[1].close()
        self.sysroot_files[bare] = (member, spool)

    def sysroot_link(self, out: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> bool:
        """Handle a hardlink into sysroot/ostree/repo; False when it is an ordinary (dropped) one."""
        path, top = self.normalize(member.name)
        kept = self.sysroot_files.pop(target, None)
        if kept is not None:
            if path is None:
                kept[1].close()
                self.drop(None, top)
                return True
            info = self.clean_info(kept[0], path)
            with kept[1] as spool:
                out.addfile(info, spool)
            self.entries.add(path)
            self.sysroot_relinks[target] = path
            return True
        first = self.sysroot_relinks.get(target)
        if first is None:
            return False
        if path is None:
            self.drop(None, top)
            return True
        info = self.clean_info(member, path)
        info.linkname = first
        self.entries.add(path)
        out.addfile(info)
        return True

    def close(self) -> None:
        for _, spool in self.sysroot_files.values():
            spool.close()


def filter_layer(
    src: IO[bytes], dest: IO[bytes], *, layer: str, config: FilterConfig, tmpdir: Path
) -> FilterResult:
    """Copy the layer tar `src` to `dest` (PAX), applying the rules above."""
    flt = _Filter(layer, config, tmpdir)
    try:
        with (
            tarfile.open(fileobj=src, mode="r|") as tin,
            tarfile.open(fileobj=dest, mode="w|", format=tarfile.PAX_FORMAT) as tout,
        ):
            for member in tin:
                flt.copy(tin, tout, member)
    except (tarfile.TarError, EOFError) as e:
        raise ImportFailure(f"layer {layer}: not a valid tar stream ({e})") from None
    finally:
        flt.close()
    return flt.result


def commit_command(repo: Path, *, selinux_policy: Path | None = None) -> list[str]:
    """`ostree commit` reading a tar from stdin and printing the commit (no ref: the caller sets it
    once the layer's digest has been verified)."""
    argv = [
        "ostree",
        "commit",
        f"--repo={repo}",
        "--orphan",
        "--no-bindings",
        "--tar-autocreate-parents",
        "--tree=tar=/dev/stdin",
        f"--add-metadata-string=ostree.importer.version=imgbuild {__version__}",
    ]
    if selinux_policy is not None:
        argv.append(f"--selinux-policy={selinux_policy}")
    return argv


@dataclass(frozen=True)
class DerivedCommit:
    commit: str
    filtered: Mapping[str, int]


def commit_derived_layer(
    repo: Path, src: IO[bytes], *, layer: str, config: FilterConfig, tmpdir: Path
) -> DerivedCommit:
    """Filter the layer stream `src` into `ostree commit`; returns the (unreferenced) commit."""
    broken = False
    try:
        with run.spawn(commit_command(repo), stdin=run.PIPE) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                result = filter_layer(src, proc.stdin, layer=layer, config=config, tmpdir=tmpdir)
                proc.stdin.close()
            except BrokenPipeError:
                broken = True  # ostree failed; spawn reports its error when the block ends
            out = proc.stdout.read().decode().strip()
    except CommandFailed as e:
        # What ostree refuses in a filtered layer is the layer's content (a file where a directory
        # goes, a name it cannot store...): the image's fault, not ours.
        lines = e.stderr_tail.strip().splitlines()
        raise ImportFailure(
            f"layer {layer}: ostree cannot commit it: {lines[-1] if lines else e}",
            hint="the derived layer is malformed; rebuild the image",
        ) from None
    if broken or not out:
        raise ImportFailure(f"layer {layer}: ostree stopped reading the layer")
    return DerivedCommit(out, dict(result.filtered))
