"""The installer's programs for one architecture, unpacked from the Debian archive (never run at build time).

busybox-static is the shell and the coreutils; sfdisk (moves the backup GPT, grows the root partition),
util-linux's blkdiscard (-z: zeroes the image's holes with one BLKZEROOUT), e2fsck/resize2fs, xfs_growfs and
zstd (the payload) come with the libraries they link. The .debs are fetched with `apt-get download` through a
private apt configuration of the arch (its own lists, no dpkg database, the host's archive and keys), so
the same code serves x86_64 and aarch64 on either host and nothing is installed. `dpkg-deb -x` only unpacks:
no maintainer script runs. The unpacked tree is cached under the imgbuild cache by arch and the packages'
exact versions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder import debfetch, paths
from builder.aptsources import host_archives
from builder.arch import Arch
from builder.errors import ImgbuildError

TRIPLET = {Arch.X86_64: "x86_64-linux-gnu", Arch.AARCH64: "aarch64-linux-gnu"}
SUITE = "bookworm"
CACHE_FORMAT = "imgbuild-installer-tools-1"

# Package -> the programs taken from it (paths inside the package); libraries are taken whole.
PROGRAMS = {
    "busybox-static": ("bin/busybox",),
    "fdisk": ("sbin/sfdisk",),
    "util-linux": ("sbin/blkdiscard",),
    "e2fsprogs": ("sbin/e2fsck", "sbin/resize2fs"),
    "xfsprogs": ("usr/sbin/xfs_growfs",),
    "zstd": ("usr/bin/zstd",),
}
LIBRARIES = (
    "libc6",
    "libfdisk1",
    "libsmartcols1",
    "libtinfo6",
    "libreadline8",
    "libuuid1",
    "libblkid1",
    "libext2fs2",
    "libcom-err2",
    "liburcu8",
    "libzstd1",
    "liblzma5",
    "liblz4-1",
    "zlib1g",
)


class InstallerToolsError(ImgbuildError):
    """The installer's programs could not be fetched from the Debian archive."""


@dataclass(frozen=True)
class Tools:
    root: Path  # bin/, sbin/, usr/..., lib*/: what goes into the initramfs as it is
    versions: dict[str, str]  # package -> version
    digest: str  # of the versions: part of the initramfs cache key


def _fetch(arch: Arch, apt_state: Path, workdir: Path) -> tuple[debfetch.Deb, ...]:
    """The packages' .debs for `arch` from the host's archive for SUITE (apt's lists kept in `apt_state`)."""
    archive = host_archives().get(SUITE)
    if archive is None:
        raise InstallerToolsError(
            f"the host's apt sources have no {SUITE} archive",
            hint=f"add a Debian {SUITE} entry to /etc/apt/sources.list",
        )
    sources = (f"deb [arch={arch.debian}] {archive} {SUITE} main",)
    hint = "the installer's programs come from the Debian archive: check the network and apt's sources"
    packages = (*PROGRAMS, *LIBRARIES)
    return debfetch.download(arch, sources, packages, apt_state, workdir / "debs", hint=hint)


def _unpack(debs: tuple[debfetch.Deb, ...], arch: Arch, dest: Path, scratch: Path) -> None:
    triplet = TRIPLET[arch]
    for deb in debs:
        tree = scratch / deb.package
        debfetch.unpack(deb, tree)
        for program in PROGRAMS.get(deb.package, ()):
            if not (tree / program).is_file():
                raise InstallerToolsError(f"{deb.package} {deb.version} has no {program}")
            (dest / program).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / program, dest / program)
        if deb.package in LIBRARIES:
            # The shared libraries and the dynamic loader (and its /lib64 or /lib link); nothing else
            # (gconv modules, documentation) is needed by the programs above.
            for libdir in (f"lib/{triplet}", f"usr/lib/{triplet}", "lib64", "lib"):
                src = tree / libdir
                if not src.is_dir():
                    continue
                for entry in src.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        continue
                    if ".so" not in entry.name:
                        continue
                    (dest / libdir).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(entry, dest / libdir / entry.name, follow_symlinks=False)


def installer_tools(arch: Arch) -> Tools:
    """The unpacked programs for `arch`, cached by the archive's current versions of the packages."""
    base = paths.cache_dir() / "installer" / "tools"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{arch.value}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with tempfile.TemporaryDirectory(prefix="imgbuild-tools-", dir=base) as tmp:
            work = Path(tmp)
            # apt's lists stay in the cache: the next update only fetches what changed.
            debs = _fetch(arch, base / f"apt-{arch.value}", work)
            versions = {deb.package: deb.version for deb in debs}
            digest = hashlib.sha256(
                json.dumps([CACHE_FORMAT, arch.value, versions], sort_keys=True).encode()
            ).hexdigest()
            final = base / f"{arch.value}-{digest[:20]}"
            if not final.is_dir():
                staging = work / "root"
                staging.mkdir()
                _unpack(debs, arch, staging, work / "unpacked")
                (staging / "versions.json").write_text(json.dumps(versions, indent=1, sort_keys=True))
                staging.rename(final)
        return Tools(final, versions, digest)
