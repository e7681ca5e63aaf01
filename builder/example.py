"""The example OS: a small Debian 12 ostree system, built here from Debian packages (no registry needed).

The recipe lives in examples/debian/ (package list, mmdebstrap customize hook, the ostree layout conversion,
the boot self-test). `build_example()` runs it: mmdebstrap (through qemu-user for a foreign architecture),
`ostree commit` into `<output>/<arch>/repo` on ref `debian/12/<arch>/example`, then encapsulation into
`<output>/<arch>/debian-ostree-<arch>.ociarchive`. The result is cached under a key made of the recipe (the
files of examples/debian/ and this module) and the state of the Debian archive (the InRelease files of the
suites, which pin every package version); `manifest.json` beside the output records the key and the
installed package versions. A lock file keeps two processes from building the same architecture at once.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import hashlib
import json
import logging
import os
import shlex
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import paths, run
from builder.aptsources import host_archives
from builder.arch import Arch
from builder.errors import ImgbuildError, NeedsRoot, ToolMissing
from builder.ostree.encapsulate import encapsulate

log = logging.getLogger(__name__)

# The line the example's self-test unit prints on the serial console (imgbuild.selftest=1 on the kernel
# command line): "IMGBUILD-SELFTEST-OK commit=<booted commit> cmdline=<kernel command line>".
SELFTEST_MARKER = "IMGBUILD-SELFTEST-OK"
SELFTEST_KARG = "imgbuild.selftest=1"

RECIPE_DIR = paths.PROJECT_ROOT / "examples" / "debian"
SUITE = "bookworm"
# Where the example keeps its dpkg database (status, info/*.list); /var/lib/dpkg points there.
DPKG_DIR = "usr/lib/sysimage/dpkg"
MANIFEST_NAME = "manifest.json"
# Bump when the cache layout or the meaning of the key changes.
CACHE_FORMAT = "imgbuild-example-1"
ARCHIVE_TIMEOUT = 30.0


class ExampleBuildError(ImgbuildError):
    """The example OS could not be built."""


@dataclass(frozen=True)
class ExampleImage:
    reference: str  # oci-archive:/abs/path/debian-ostree-<arch>.ociarchive
    path: Path  # the OCI archive
    commit: str  # the ostree commit inside it
    kernel: str  # the kernel version (usr/lib/modules/<kernel>/)
    arch: Arch
    cached: bool  # reused from an earlier build
    repo: Path  # the archive-mode ostree repository holding `commit`
    ref: str  # the ref of `commit` in `repo`


def example_ref(arch: Arch) -> str:
    return f"debian/12/{arch.value}/example"


def archive_name(arch: Arch) -> str:
    return f"debian-ostree-{arch.value}.ociarchive"


def recipe_files() -> tuple[Path, ...]:
    """Every file that shapes the example: the recipe directory (but its documentation) and this module."""
    files = sorted(
        p for p in RECIPE_DIR.rglob("*") if p.is_file() and p.suffix != ".md" and "__pycache__" not in p.parts
    )
    return (*files, Path(__file__).resolve())


# The code that turns the commit into the OCI archive: when it changes, the archive is written again (the
# commit is kept).
ENCAPSULATOR_SOURCES = (
    "builder/ostree/encapsulate.py",
    "builder/ostree/chunking.py",
    "builder/oci/writer.py",
)


def encapsulator_digest() -> str:
    h = hashlib.sha256()
    for rel in ENCAPSULATOR_SOURCES:
        path = paths.PROJECT_ROOT / rel
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"-")
    return h.hexdigest()


def recipe_digest() -> str:
    h = hashlib.sha256()
    for path in recipe_files():
        rel = path.relative_to(paths.PROJECT_ROOT).as_posix()
        h.update(f"{rel}\0{path.stat().st_mode & 0o111:o}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def read_packages(arch: Arch) -> tuple[str, ...]:
    """The package list for one architecture (packages.txt: `name` or `debian-arch: name`)."""
    wanted: list[str] = []
    for raw in (RECIPE_DIR / "packages.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        only, sep, name = line.partition(":")
        if not sep:
            wanted.append(line)
        elif only.strip() == arch.debian:
            wanted.append(name.strip())
    return tuple(wanted)


def read_sources() -> tuple[str, ...]:
    """The one-line sources.list entries the example is built from: the recipe's suites (`sources.list`:
    "SUITE COMPONENT...") from the archive the host's apt uses for each of them."""
    archives = host_archives()
    entries = []
    for line in (RECIPE_DIR / "sources.list").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        suite, components = words[0], words[1:]
        if suite not in archives:
            raise ExampleBuildError(
                f"the host's apt sources have no entry for the Debian suite {suite}",
                hint="add it to /etc/apt/sources.list or /etc/apt/sources.list.d/ (the example OS is built "
                "from the archive the host uses)",
            )
        entries.append(f"deb {archives[suite]} {suite} {' '.join(components)}")
    return tuple(entries)


@functools.cache  # once per process: a test session or a CLI run sees one state of the archive
def archive_state() -> tuple[tuple[str, str], ...]:
    """(InRelease URL, sha256) of every suite: they pin the versions of all packages the recipe installs."""
    state = []
    for line in read_sources():
        _deb, url, suite, *_components = line.split()
        release = f"{url.rstrip('/')}/dists/{suite}/InRelease"
        try:
            with urllib.request.urlopen(release, timeout=ARCHIVE_TIMEOUT) as response:
                body = response.read()
        except (urllib.error.URLError, OSError) as e:
            raise ExampleBuildError(
                f"cannot read {release}: {e}",
                hint="the example OS is built from the Debian archive; check the network or the proxy",
            ) from e
        state.append((release, hashlib.sha256(body).hexdigest()))
    return tuple(state)


def cache_key(arch: Arch, recipe: str, archive: Iterable[tuple[str, str]]) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{arch.value}\0{recipe}\0".encode())
    for url, digest in archive:
        h.update(f"{url}\0{digest}\0".encode())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target == prefix or target.startswith(prefix + "/"):
            found.append(target)
    return found


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    """A scratch directory in imgbuild's cache (outside the checkout, so that nothing walking the checkout
    meets the chroot's /proc and /sys), removed afterwards unless something is still mounted in it: a
    killed mmdebstrap can leave its mounts behind, and deleting through them must not happen."""
    parent = paths.cache_dir() / "example-work"
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=parent))
    try:
        yield work
    finally:
        for target in sorted(_mounts_under(work), reverse=True):
            run.run(["umount", "--lazy", target], check=False)
        left = _mounts_under(work)
        if left:
            log.error("not removing %s: still mounted: %s", work, ", ".join(left))
        else:
            shutil.rmtree(work, ignore_errors=True)


def _check_host(arch: Arch) -> None:
    if not run.is_root():
        raise NeedsRoot(
            "building the example OS needs root (mmdebstrap --mode=root, chroot, ostree commit)",
            hint="run it as root",
        )
    for tool in ("mmdebstrap", "ostree", "dpkg-query"):
        run.require(tool)
    if arch is not Arch.host():
        run.require("arch-test")  # mmdebstrap checks foreign-architecture support with it
        binfmt = Path(f"/proc/sys/fs/binfmt_misc/qemu-{arch.value}")
        if not binfmt.exists() or not binfmt.read_text().startswith("enabled"):
            raise ToolMissing(
                f"qemu-user-static is not registered with binfmt_misc for {arch.value}",
                hint="run scripts/install-host-packages (installs qemu-user-static and registers it)",
            )


def mmdebstrap_argv(arch: Arch, target: Path) -> list[str]:
    hook = f'{shlex.quote(str(RECIPE_DIR / "customize.sh"))} "$1" {shlex.quote(str(RECIPE_DIR))}'
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        "--variant=minbase",
        f"--arch={arch.debian}",
        f"--include={','.join(read_packages(arch))}",
        # Merged /usr the way debootstrap makes it, with usr-is-merged: init-system-helpers needs
        # "usrmerge | usr-is-merged", and usrmerge would pull in 50 MB of perl.
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        '--aptopt=APT::Install-Recommends "false"',
        '--aptopt=APT::Install-Suggests "false"',
        # The kernel's and dracut's postinst would run dracut before the ostree module is installed (and
        # again, slowly, under emulation): a no-op stands in for dracut's kernel hook while packages
        # install, and customize.sh builds the one initramfs itself.
        "--dpkgopt=path-exclude=/etc/kernel/postinst.d/dracut",
        "--setup-hook=mkdir -p \"$1/etc/kernel/postinst.d\" && printf '#!/bin/sh\\nexit 0\\n' "
        '> "$1/etc/kernel/postinst.d/dracut" && chmod 0755 "$1/etc/kernel/postinst.d/dracut"',
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/lintian/*",
        f"--customize-hook={hook}",
        SUITE,
        str(target),
        *read_sources(),
    ]
    return argv


def _tree_size(root: Path) -> int:
    """Bytes of the uncompressed tree: every inode once (hardlinks count once), by its st_size."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            st = (Path(dirpath) / name).lstat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def _installed_packages(root: Path) -> dict[str, str]:
    out = run.run(
        [
            "dpkg-query",
            f"--admindir={root / DPKG_DIR}",
            "-W",
            "-f",
            "${Package}:${Architecture}\t${Version}\n",
        ]
    ).out
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def _kernel_version(root: Path) -> str:
    kernels = [p.parent.name for p in (root / "usr/lib/modules").glob("*/vmlinuz")]
    if len(kernels) != 1 or not (root / "usr/lib/modules" / kernels[0] / "initramfs.img").is_file():
        raise ExampleBuildError(f"expected one kernel with an initramfs in the example, found {kernels}")
    return kernels[0]


def _os_version(root: Path) -> str:
    debian = (root / "usr/etc/debian_version").read_text().strip()
    return f"{debian}.{datetime.datetime.now(datetime.UTC):%Y%m%d}"


def _commit(repo: Path, tree: Path, arch: Arch, kernel: str, key: str) -> str:
    ref = example_ref(arch)
    if not (repo / "config").exists():
        run.run(["ostree", f"--repo={repo}", "init", "--mode=archive"])
    previous = _repo_commit(repo, arch)
    if previous is not None:
        run.run(["ostree", f"--repo={repo}", "refs", "--delete", f"{ref}-previous"], check=False)
        run.run(["ostree", f"--repo={repo}", "refs", previous, f"--create={ref}-previous"])
    run.run(
        [
            "ostree",
            f"--repo={repo}",
            "commit",
            f"--branch={ref}",
            f"--tree=dir={tree}",
            "--parent=none",
            f"--subject=Debian 12 imgbuild example ({arch.value})",
            f"--add-metadata-string=version={_os_version(tree)}",
            "--add-metadata=ostree.bootable=true",
            f"--add-metadata-string=ostree.linux={kernel}",
            f"--add-metadata-string=imgbuild.example.key={key}",
        ]
    )
    # The newest example, and the one before it: a reader that started on the old commit (tests and demos
    # share this repository) can finish while it is replaced.
    run.run(["ostree", f"--repo={repo}", "prune", "--refs-only", "--depth=0"])
    return run.run(["ostree", f"--repo={repo}", "rev-parse", ref]).out.strip()


def _encapsulate(repo: Path, commit: str, arch: Arch, dest: Path) -> str:
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        result = encapsulate(repo, commit, f"oci-archive:{partial}:latest", arch=arch)
        partial.rename(dest)
    finally:
        partial.unlink(missing_ok=True)
    return str(result.manifest_digest)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_manifest(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    partial.rename(path)


def _repo_commit(repo: Path, arch: Arch) -> str | None:
    if not (repo / "config").exists():
        return None
    done = run.run(["ostree", f"--repo={repo}", "rev-parse", example_ref(arch)], check=False)
    return done.out.strip() if done.returncode == 0 else None


def _build_commit(arch: Arch, out: Path, key: str) -> dict[str, Any]:
    """mmdebstrap, the ostree layout, the commit: the manifest of what was built."""
    started = time.monotonic()
    with _workdir() as work:
        tree = work / "root"
        log.info("building the %s example OS with mmdebstrap (a few minutes)", arch.value)
        run.run(mmdebstrap_argv(arch, tree), hint="see examples/debian/README.md")
        run.run([RECIPE_DIR / "ostreeify.sh", tree])
        kernel = _kernel_version(tree)
        packages = _installed_packages(tree)
        size = _tree_size(tree)
        commit = _commit(out / "repo", tree, arch, kernel, key)
    return {
        "arch": arch.value,
        "commit": commit,
        "kernel": kernel,
        "ref": example_ref(arch),
        "dpkg_dir": DPKG_DIR,
        "tree_bytes": size,
        "packages": packages,
        "build_seconds": round(time.monotonic() - started, 1),
    }


def build_example(arch: Arch, *, output: Path | None = None, force: bool = False) -> ExampleImage:
    """Build (or reuse from the cache) the example OS for `arch` as an ostree-native OCI archive."""
    out = (output or paths.examples_dir()).resolve() / arch.value
    recipe = recipe_digest()
    with _locked(out / ".lock"):
        manifest_path = out / MANIFEST_NAME
        manifest = _read_manifest(manifest_path)
        try:
            key = cache_key(arch, recipe, archive_state())
        except ExampleBuildError:
            # Offline: an earlier build of the same recipe is better than no example at all.
            if force or manifest is None or manifest.get("recipe") != recipe:
                raise
            log.warning(
                "the Debian archive is unreachable: reusing the %s example of this recipe", arch.value
            )
            key = str(manifest["key"])
        repo = out / "repo"
        fresh = (
            not force
            and manifest is not None
            and manifest.get("key") == key
            and _repo_commit(repo, arch) == manifest.get("commit")
        )
        cached = fresh
        if not fresh or manifest is None:
            _check_host(arch)
            manifest = {"format": CACHE_FORMAT, "key": key, "recipe": recipe, "archive": archive_state()}
            manifest |= _build_commit(arch, out, key)
            manifest["archive"] = [list(item) for item in manifest["archive"]]
            _write_manifest(manifest_path, manifest)
        dest = out / archive_name(arch)
        encapsulator = encapsulator_digest()
        if (
            not manifest.get("manifest_digest")
            or manifest.get("encapsulator") != encapsulator
            or not dest.is_file()
        ):
            cached = False
            manifest["encapsulator"] = encapsulator
            started = time.monotonic()
            manifest["manifest_digest"] = _encapsulate(repo, str(manifest["commit"]), arch, dest)
            manifest["encapsulate_seconds"] = round(time.monotonic() - started, 1)
            manifest["archive_bytes"] = dest.stat().st_size
            _write_manifest(manifest_path, manifest)
    return ExampleImage(
        reference=f"oci-archive:{dest}",
        path=dest,
        commit=str(manifest["commit"]),
        kernel=str(manifest["kernel"]),
        arch=arch,
        cached=cached,
        repo=repo,
        ref=example_ref(arch),
    )


def ensure_examples(arches: Iterable[Arch]) -> tuple[ExampleImage, ...]:
    """Build or reuse the example of each architecture, in order."""
    return tuple(build_example(arch) for arch in arches)


def example_manifest(image: ExampleImage) -> dict[str, Any]:
    """The manifest recorded beside an example (versions of the installed packages, sizes, build time)."""
    data = _read_manifest(image.path.parent / MANIFEST_NAME)
    if data is None:
        raise ExampleBuildError(f"the example's manifest is missing beside {image.path}")
    return data


__all__ = [
    "DPKG_DIR",
    "SELFTEST_KARG",
    "SELFTEST_MARKER",
    "ExampleBuildError",
    "ExampleImage",
    "build_example",
    "ensure_examples",
    "example_manifest",
    "example_ref",
]
