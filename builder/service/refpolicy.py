"""Which container references the service builds from: its operator's policy (`serve --allow-ref`).

The builder runs as root, so a reference is a way to make root read a path. A reference is therefore
parsed and normalised first (the same parser the command line uses), then matched against the policy,
before anything reads it:

- registries (`REGISTRY/NAME:TAG`, `docker://...`) are matched as `docker://NAME[:TAG|@DIGEST]`; without
  any registry pattern in the policy, every registry is allowed (a registry reads nothing on this machine);
- `oci:`, `oci-archive:` and `docker-archive:` are matched as `TRANSPORT:/ABSOLUTE/PATH` (without the tag)
  and allowed only by a pattern. The path must match both as written (with `..` folded lexically) and with
  its symlinks resolved; the builder is then given the resolved path;
- `containers-storage:` is matched as `containers-storage:NAME`; a `[driver@root]` storage specification
  names directories and is always refused.

Every refusal has the same text whatever the path holds, and nothing about the path is read except the
symlinks along it (os.path.realpath), so the answer tells nothing about whether it exists.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass

from builder.errors import BadReference, ImgbuildError
from builder.source.reference import Reference, Transport, parse_reference

REGISTRY_DEFAULT = "docker://*"
_GLOB = re.compile(r"[*?\[]")
_LOCAL = (Transport.OCI, Transport.OCI_ARCHIVE, Transport.DOCKER_ARCHIVE)


class RefusedReference(ImgbuildError):
    """A reference the policy does not allow (the message never depends on the path)."""


@dataclass(frozen=True)
class Pattern:
    transport: str  # "docker", "oci", ..., as Transport values
    written: str  # the pattern's body as the operator wrote it (paths: normalised lexically)
    resolved: str  # paths: with the symlinks of its fixed leading directories resolved

    def matches(self, transport: str, lexical: str, real: str) -> bool:
        return (
            transport == self.transport
            and fnmatch.fnmatchcase(lexical, self.written)
            and fnmatch.fnmatchcase(real, self.resolved)
        )


def _resolve_glob_path(path: str) -> str:
    """A path pattern with the directories before its first wildcard resolved (the operator's
    /srv may be a symlink; the references are compared resolved)."""
    glob_at = _GLOB.search(path)
    if glob_at is None:
        return os.path.realpath(path)
    head, sep, _ = path[: glob_at.start()].rpartition("/")
    fixed = os.path.realpath(head or "/")
    rest = path[len(head) + len(sep) :]
    return fixed.rstrip("/") + "/" + rest


def parse_pattern(text: str) -> Pattern:
    """One `--allow-ref` pattern: `docker://GLOB`, `oci:/DIR/GLOB`, `oci-archive:/DIR/GLOB`,
    `docker-archive:/DIR/GLOB` or `containers-storage:GLOB` (ImgbuildError, exit 2, otherwise)."""
    scheme, sep, body = text.partition(":")
    hint = "write e.g. --allow-ref 'oci-archive:/srv/images/*' or --allow-ref 'docker://REGISTRY/team/*'"
    if text.startswith("docker://"):
        body = text.removeprefix("docker://")
        if not body:
            raise ImgbuildError(f"--allow-ref {text!r}: empty registry pattern", hint=hint)
        return Pattern(Transport.REGISTRY, body, body)
    if not sep or scheme not in {t.value for t in Transport} or scheme == Transport.REGISTRY:
        raise ImgbuildError(f"--allow-ref {text!r}: unknown transport", hint=hint)
    if scheme == Transport.CONTAINERS_STORAGE:
        if not body or body.startswith("["):
            raise ImgbuildError(f"--allow-ref {text!r}: give an image name pattern", hint=hint)
        return Pattern(scheme, body, body)
    if not body.startswith("/") or ":" in body:
        raise ImgbuildError(f"--allow-ref {text!r}: the path must be absolute, without a colon", hint=hint)
    written = os.path.normpath(body)
    if written == "/" or (not _GLOB.search(written) and written.count("/") < 2):
        raise ImgbuildError(f"--allow-ref {text!r}: name a directory below /, not all of it", hint=hint)
    return Pattern(scheme, written, _resolve_glob_path(written))


@dataclass(frozen=True)
class RefPolicy:
    patterns: tuple[Pattern, ...] = ()

    @classmethod
    def from_args(cls, texts: tuple[str, ...] | list[str]) -> RefPolicy:
        patterns = tuple(parse_pattern(t) for t in texts)
        if not any(p.transport == Transport.REGISTRY for p in patterns):
            patterns += (parse_pattern(REGISTRY_DEFAULT),)
        return cls(patterns)

    def check(self, text: str) -> str:
        """The reference to give the builder (local paths resolved); RefusedReference otherwise."""
        refused = RefusedReference(
            f"container reference {text[:200]!r} is not allowed by this service",
            hint="its operator allows references with `imgbuild serve --allow-ref PATTERN`",
        )
        try:
            ref = _parse(text)
        except BadReference:
            raise refused from None
        if ref.transport is Transport.REGISTRY:
            name = str(ref)
            allowed = any(p.matches(Transport.REGISTRY, name, name) for p in self.patterns)
            if not allowed:
                raise refused
            return text
        if ref.transport is Transport.CONTAINERS_STORAGE:
            if ref.name.startswith("[") or not any(
                p.matches(Transport.CONTAINERS_STORAGE, ref.name, ref.name) for p in self.patterns
            ):
                raise refused
            return f"{Transport.CONTAINERS_STORAGE}:{ref.name}"
        lexical, real = _paths(text, ref)
        if not any(p.matches(ref.transport, lexical, real) for p in self.patterns):
            raise refused
        resolved = Reference(ref.transport, real, ref.tag, None)
        return resolved.skopeo


def _parse(text: str) -> Reference:
    ref = parse_reference(text)
    if ref.transport in _LOCAL:
        body = _local_body(text)
        if not body.startswith("/"):  # relative to the service's working directory: never meant
            raise BadReference("a local path must be absolute")
    return ref


def _local_body(text: str) -> str:
    """The PATH of `TRANSPORT:PATH[:TAG]`, also inside `ostree-unverified-image:`."""
    inner = text.strip().removeprefix("ostree-unverified-image:")
    return inner.partition(":")[2].partition(":")[0]


def _paths(text: str, ref: Reference) -> tuple[str, str]:
    """The path with `..` folded lexically, and with its symlinks resolved."""
    lexical = os.path.normpath(_local_body(text))
    return lexical, os.path.realpath(lexical)


def describe(policy: RefPolicy) -> str:
    """The policy in one line, for the service's log."""
    return ", ".join(
        f"{p.transport}:{'//' if p.transport == Transport.REGISTRY else ''}{p.written}"
        for p in policy.patterns
    )
