"""Debian packages of any architecture, downloaded with the host's apt under a private configuration and
unpacked without dpkg: no maintainer script, no program of the target architecture runs, so a foreign
architecture needs no emulation.

apt keeps its lists, cache and (empty) status in the work directory, reads only the given sources, and
takes the host's apt.conf.d (proxy settings) and keyrings, as mmdebstrap does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder import run
from builder.arch import Arch


@dataclass(frozen=True)
class Deb:
    package: str
    architecture: str
    version: str
    path: Path

    @property
    def key(self) -> str:
        """`package:arch`, as dpkg-query names installed packages."""
        return f"{self.package}:{self.architecture}"


def _apt_options(work: Path, arch: Arch) -> list[str]:
    empty = work / "empty"
    options = {
        "Dir::State": work / "state",
        "Dir::State::status": work / "status",
        "Dir::Cache": work / "cache",
        "Dir::Etc::SourceList": work / "sources.list",
        "Dir::Etc::SourceParts": empty,
        # The host's pinning is about the host's packages, not these.
        "Dir::Etc::Preferences": empty / "preferences",
        "Dir::Etc::PreferencesParts": empty,
        "APT::Architecture": arch.debian,
        "APT::Architectures": arch.debian,
        "Debug::NoLocking": "1",  # a private state directory: nobody else uses its lock
        "APT::Sandbox::User": "root",  # the work directory belongs to root
    }
    argv = []
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return argv


def download(arch: Arch, sources: tuple[str, ...], packages: tuple[str, ...], work: Path) -> tuple[Deb, ...]:
    """`apt-get update` and `apt-get download` of `packages` (no dependencies) for `arch` from the
    one-line `sources` entries, into `work`/debs."""
    for sub in ("state/lists/partial", "cache/archives/partial", "empty", "debs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "status").write_text("")
    (work / "sources.list").write_text("".join(f"{line}\n" for line in sources))
    options = _apt_options(work, arch)
    hint = "the signed packages come from the Debian archive the host's apt uses; check the network or proxy"
    run.run(["apt-get", *options, "-q", "update"], hint=hint)
    debs = work / "debs"
    run.run(["apt-get", *options, "-q", "download", *packages], cwd=debs, hint=hint)
    found = []
    for path in sorted(debs.glob("*.deb")):
        fields = run.run(["dpkg-deb", "--show", "--showformat=${Package}\t${Architecture}\t${Version}", path])
        package, architecture, version = fields.out.strip().split("\t")
        found.append(Deb(package, architecture, version, path))
    return tuple(found)


def unpack(deb: Deb, dest: Path) -> None:
    """The files of `deb` under `dest` (dpkg-deb -x: the data only, no maintainer script runs)."""
    dest.mkdir(parents=True, exist_ok=True)
    run.run(["dpkg-deb", "-x", deb.path, dest])
