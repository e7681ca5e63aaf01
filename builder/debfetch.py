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
from builder.errors import ImgbuildError


class DebFetchError(ImgbuildError):
    """The Debian archive did not give the packages asked for."""


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
        "Acquire::Languages": "none",  # no translated descriptions: nothing here reads them
        "APT::Architecture": arch.debian,
        "APT::Architectures": arch.debian,
        "Debug::NoLocking": "1",  # a private state directory: nobody else uses its lock
        "APT::Sandbox::User": "root",  # the work directory belongs to root
    }
    argv = []
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return argv


def download(
    arch: Arch, sources: tuple[str, ...], packages: tuple[str, ...], state: Path, debs: Path, *, hint: str
) -> tuple[Deb, ...]:
    """`apt-get update` and `apt-get download` of `packages` (no dependencies) for `arch` from the one-line
    `sources` entries, into the new directory `debs`. apt's lists stay in `state` (a later update there
    fetches only what changed). Every package asked for must come: DebFetchError names the missing."""
    for sub in ("state/lists/partial", "cache/archives/partial", "empty"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").write_text("")
    (state / "sources.list").write_text("".join(f"{line}\n" for line in sources))
    options = _apt_options(state, arch)
    run.run(["apt-get", *options, "-q", "update"], hint=hint)
    debs.mkdir(parents=True)
    run.run(["apt-get", *options, "-q", "download", *packages], cwd=debs, hint=hint)
    found = []
    for path in sorted(debs.glob("*.deb")):
        fields = run.run(["dpkg-deb", "--show", "--showformat=${Package}\t${Architecture}\t${Version}", path])
        package, architecture, version = fields.out.strip().split("\t")
        found.append(Deb(package, architecture, version, path))
    missing = sorted(set(packages) - {deb.package for deb in found})
    if missing:
        raise DebFetchError(f"apt-get download gave no {', '.join(missing)} for {arch.debian}", hint=hint)
    return tuple(found)


def unpack(deb: Deb, dest: Path) -> None:
    """The files of `deb` under `dest` (dpkg-deb -x: the data only, no maintainer script runs)."""
    dest.mkdir(parents=True, exist_ok=True)
    run.run(["dpkg-deb", "-x", deb.path, dest])
