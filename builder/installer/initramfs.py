"""The installer environment: the image's own kernel and a small initramfs, made without running anything
of the target.

The kernel (`/usr/lib/modules/<kver>/vmlinuz`) and the drivers the installer needs (builder.installer.modules,
with their dependencies from the image's modules.dep) are read from the imported commit with `ostree cat`;
the programs come unpacked from Debian (builder.installer.tools); /init is init.sh. The pair is cached under
the imgbuild cache by everything it is made of (commit, kernel version, the tools' package versions, init.sh
and the module list), so a second build of the same image reuses it.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import lzma
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from builder import paths, run
from builder.arch import Arch
from builder.errors import ImgbuildError
from builder.installer import modules
from builder.installer.tools import installer_tools

INIT_SCRIPT = Path(__file__).with_name("init.sh")
CACHE_FORMAT = "imgbuild-installer-env-1"
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".xz": lzma.decompress,
    ".zst": zstandard.decompress,
    ".gz": gzip.decompress,
}


class NoKernel(ImgbuildError):
    """The image has no kernel for the installer to boot."""


@dataclass(frozen=True)
class InstallerEnv:
    kernel: Path
    initrd: Path
    kernel_version: str
    modules: tuple[str, ...]  # what /init loads, in order
    tools: dict[str, str]  # Debian package -> version


def _ostree(repo: Path, *args: str) -> run.Completed:
    return run.run(["ostree", f"--repo={repo}", *args])


def kernel_version(repo: Path, commit: str) -> str:
    listing = _ostree(repo, "ls", "-C", commit, "/usr/lib/modules").out.splitlines()
    found = []
    for line in listing:
        fields = line.split()
        if fields and fields[0].startswith("d") and fields[-1] != "/usr/lib/modules":
            kver = fields[-1].rsplit("/", 1)[-1]
            files = _ostree(repo, "ls", commit, f"/usr/lib/modules/{kver}").out
            if f"/usr/lib/modules/{kver}/vmlinuz" in files:
                found.append(kver)
    if not found:
        raise NoKernel(
            "the image has no kernel in /usr/lib/modules/<version>/vmlinuz for the installer to boot",
            hint="an ostree-native image keeps its kernel there",
        )
    return sorted(found)[-1]


def _cat(repo: Path, commit: str, path: str, dest: Path) -> None:
    with open(dest, "wb") as out:
        run.run(["ostree", f"--repo={repo}", "cat", commit, path], stdout=out)


def _cpio(root: Path, dest: Path) -> None:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join([".", *names]).encode() + b"\n"
    archive = root.parent / "initrd.cpio"
    with open(archive, "wb") as out:
        run.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], input=listing, stdout=out, cwd=root)
    with open(archive, "rb") as src, gzip.open(dest, "wb", compresslevel=6) as gz:
        shutil.copyfileobj(src, gz, 1 << 20)


def _assemble(repo: Path, commit: str, arch: Arch, kver: str, tools_root: Path, work: Path) -> list[str]:
    moddir = f"/usr/lib/modules/{kver}"
    _cat(repo, commit, f"{moddir}/vmlinuz", work / "vmlinuz")
    _cat(repo, commit, f"{moddir}/modules.dep", work / "modules.dep")
    order = modules.load_order((work / "modules.dep").read_text())
    root = work / "root"
    shutil.copytree(tools_root, root, symlinks=True)
    (root / "versions.json").unlink()
    (root / "bin/sh").symlink_to("busybox")
    shutil.copy2(INIT_SCRIPT, root / "init")
    (root / "init").chmod(0o755)
    libmod = root / "lib/modules"
    libmod.mkdir(parents=True, exist_ok=True)
    loaded = []
    for rel in order:
        target = libmod / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _cat(repo, commit, f"{moddir}/{rel}", target)
        suffix = Path(rel).suffix
        if suffix in _DECOMPRESS:  # busybox insmod takes plain modules; decompressing is only data
            plain = target.with_suffix("")
            plain.write_bytes(_DECOMPRESS[suffix](target.read_bytes()))
            target.unlink()
            rel = rel[: -len(suffix)]
        loaded.append(rel)
    (libmod / "load-order").write_text("".join(f"{rel}\n" for rel in loaded))
    _cpio(root, work / "initrd.img")
    return loaded


def installer_env(repo: Path, commit: str, arch: Arch) -> InstallerEnv:
    """The installer's kernel and initramfs for the image `commit` in `repo` (cached)."""
    tools = installer_tools(arch)
    kver = kernel_version(repo, commit)
    key = hashlib.sha256()
    for part in (CACHE_FORMAT, arch.value, commit, kver, tools.digest, ",".join(modules.WANTED)):
        key.update(part.encode() + b"\0")
    key.update(INIT_SCRIPT.read_bytes())
    base = paths.cache_dir() / "installer" / "env"
    base.mkdir(parents=True, exist_ok=True)
    final = base / key.hexdigest()[:32]
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():
            with tempfile.TemporaryDirectory(prefix="imgbuild-env-", dir=base) as tmp:
                work = Path(tmp)
                loaded = _assemble(repo, commit, arch, kver, tools.root, work)
                done = work / "env"
                done.mkdir()
                (work / "vmlinuz").rename(done / "vmlinuz")
                (work / "initrd.img").rename(done / "initrd.img")
                (done / "modules").write_text("".join(f"{m}\n" for m in loaded))
                done.rename(final)
    loaded_modules = tuple((final / "modules").read_text().split())
    return InstallerEnv(final / "vmlinuz", final / "initrd.img", kver, loaded_modules, tools.versions)
