"""Container image references as users write them, and the forms skopeo and bootc need.

Accepted: `registry.invalid/a/b:36` or `docker://registry.invalid/a/b:36` (a registry, optionally pinned
`@sha256:<hex>`), `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]` and
`containers-storage:REF`. The origin forms bootc writes (`ostree-unverified-registry:...`,
`ostree-unverified-image:<transport>:...`) are accepted too, so an origin file's reference can be fed back.

The signed forms, as ostree-ext spells them (`OstreeImageReference`, `SignatureSource`):
- `ostree-remote-image:REMOTE:TRANSPORT:NAME` and `ostree-remote-registry:REMOTE:NAME`: the image's ostree
  commit must carry a signature by a key of the ostree remote REMOTE (builder.ostree.signature);
- `ostree-image-signed:TRANSPORT:NAME`: the containers signature policy must require a signature for it
  (builder.source.policy). The containers policy is honoured for every fetch, whatever the form.
"""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass, replace
from pathlib import Path

from builder.errors import BadReference

EXAMPLE = "registry.invalid/fedora/silverblue:36"

# The distribution reference grammar (docker/distribution reference/regexp.go), reduced to what we need.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}"
_REGISTRY_RE = re.compile(
    rf"(?P<domain>{_DOMAIN})/(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_TAG_RE = re.compile(_TAG)

DEFAULT_TAG = "latest"


class Transport(enum.StrEnum):
    REGISTRY = "docker"
    OCI = "oci"
    OCI_ARCHIVE = "oci-archive"
    DOCKER_ARCHIVE = "docker-archive"
    CONTAINERS_STORAGE = "containers-storage"

    @property
    def is_local(self) -> bool:
        """Read from files on this machine (no network, no credentials)."""
        return self in (Transport.OCI, Transport.OCI_ARCHIVE, Transport.DOCKER_ARCHIVE)


# Transports skopeo knows but imgbuild does not take, with the reason.
_UNSUPPORTED = {
    "dir": "skopeo's dir: layout has no index; copy it to oci: first",
    "ostree": "skopeo's ostree: transport is an unrelated format",
    "docker-daemon": "no container engine runs here; use docker-archive: or a registry",
    "sif": "Singularity images are not OCI images",
    "tarball": "use oci-archive: or docker-archive:",
}

# An ostree remote name: what `ostree remote add` takes (no slash, no white space, not empty).
_REMOTE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class Signature(enum.StrEnum):
    """How the image's origin is verified, as ostree-ext's SignatureSource."""

    UNVERIFIED = "ostree-unverified-image"  # the containers policy only (usually accepts anything)
    OSTREE_REMOTE = "ostree-remote-image"  # the ostree commit's signature, by the remote's keys
    CONTAINER_POLICY = "ostree-image-signed"  # the containers policy, which must not accept anything


@dataclass(frozen=True)
class Reference:
    """A parsed reference. `name` is the repository (registry) or an absolute path (oci, archives)."""

    transport: Transport
    name: str
    tag: str | None = None  # the tag, or for archives/containers-storage the part after the path
    digest: str | None = None  # "sha256:<hex>" when pinned (registries only)
    signature: Signature = Signature.UNVERIFIED
    remote: str | None = None  # the ostree remote whose keys verify the commit (OSTREE_REMOTE only)

    @property
    def skopeo(self) -> str:
        """The reference as skopeo takes it: transport prefix, absolute paths."""
        return f"{self.transport}:{self._body(for_skopeo=True)}"

    @property
    def origin(self) -> str:
        """How bootc records the source in a deployment's origin file: the one place it is derived.

        A reference verified through an ostree remote keeps that form, so that the booted system's updates
        are verified by the same remote (ostree-ext prints the registry transport as docker://).
        """
        if self.signature is Signature.OSTREE_REMOTE:
            return f"{self.signature}:{self.remote}:{self.skopeo}"
        if self.signature is Signature.CONTAINER_POLICY:
            return f"{self.signature}:{self.skopeo}"
        if self.transport is Transport.REGISTRY:
            return f"ostree-unverified-registry:{self._body(for_skopeo=False)}"
        return f"ostree-unverified-image:{self.skopeo}"

    def with_remote(self, remote: str) -> Reference:
        """The same image, its ostree commit verified by the ostree remote `remote`."""
        if not _REMOTE_RE.fullmatch(remote):
            raise _bad(remote, "not a valid ostree remote name", hint="letters, digits, '_', '.', '-'")
        return replace(self, signature=Signature.OSTREE_REMOTE, remote=remote)

    def pinned(self, digest: str) -> Reference:
        """The same repository pinned to one manifest (registries only; others are returned unchanged)."""
        if self.transport is not Transport.REGISTRY:
            return self
        return replace(self, tag=None, digest=digest)

    def _body(self, *, for_skopeo: bool) -> str:
        if self.transport is Transport.REGISTRY:
            body = "//" + self.name if for_skopeo else self.name
            # skopeo refuses a tag and a digest together; the digest is what counts.
            if self.digest is not None:
                return f"{body}@{self.digest}"
            return f"{body}:{self.tag or DEFAULT_TAG}"  # only a hand-made Reference lacks both
        if self.tag is not None:
            return f"{self.name}:{self.tag}"
        return self.name

    def __str__(self) -> str:
        if self.transport is Transport.REGISTRY:
            return self._body(for_skopeo=False)
        return self.skopeo


def _bad(text: str, why: str, hint: str | None = None) -> BadReference:
    return BadReference(
        f"bad image reference {text!r}: {why}",
        hint=hint
        or f"write e.g. {EXAMPLE}, docker://{EXAMPLE}, oci:DIR[:TAG], oci-archive:FILE[:TAG], "
        "docker-archive:FILE or containers-storage:NAME",
    )


def _parse_registry(text: str, body: str) -> Reference:
    match = _REGISTRY_RE.fullmatch(body)
    if match is None:
        first = body.split("/", 1)[0]
        if "/" not in body or not re.fullmatch(_DOMAIN, first):
            raise _bad(
                text,
                "a registry reference needs a registry host",
                hint=f"write the fully qualified name, e.g. {EXAMPLE} (short names are ambiguous)",
            )
        raise _bad(text, "not a valid repository[:tag][@sha256:<64 hex>]")
    domain = match["domain"]
    # "fedora/silverblue" is Docker Hub shorthand: the first part is a host only with a dot, port, localhost.
    if not ("." in domain or ":" in domain or domain == "localhost" or domain.startswith("[")):
        raise _bad(
            text,
            f"{domain!r} is not a registry host",
            hint=f"write the fully qualified name, e.g. {EXAMPLE} (short names are ambiguous)",
        )
    if len(match["path"]) + len(domain) + 1 > 255:
        raise _bad(text, "the repository name is longer than 255 characters")
    tag = match["tag"] or (None if match["digest"] else DEFAULT_TAG)
    return Reference(Transport.REGISTRY, f"{domain}/{match['path']}", tag, match["digest"])


def _parse_path(text: str, transport: Transport, body: str) -> Reference:
    if not body:
        raise _bad(text, f"{transport}: needs a path")
    # containers/image splits PATH:REF at the first colon, so paths cannot contain one.
    path, sep, tag = body.partition(":")
    if not path:
        raise _bad(text, f"{transport}: needs a path before the colon")
    if sep and not tag:
        raise _bad(text, "empty tag after the colon")
    if sep and transport is not Transport.DOCKER_ARCHIVE and not _TAG_RE.fullmatch(tag):
        raise _bad(text, f"{tag!r} is not a valid tag")
    if sep and transport is Transport.DOCKER_ARCHIVE and not re.fullmatch(r"[\w./:@-]+", tag):
        raise _bad(text, f"{tag!r} is not a valid docker-archive image name")
    return Reference(transport, str(Path(path).resolve()), tag or None, None)


def _parse_signed(text: str, raw: str) -> Reference | None:
    """The signed forms (see the module doc), or None when `raw` is not one."""
    scheme, _, rest = raw.partition(":")
    if scheme == Signature.CONTAINER_POLICY:
        inner = _parse_unsigned(text, _transport_form(rest))
        return replace(inner, signature=Signature.CONTAINER_POLICY)
    if scheme not in ("ostree-remote-image", "ostree-remote-registry"):
        return None
    remote, sep, image = rest.partition(":")
    if not sep or not remote or not image:
        raise _bad(
            text,
            f"{scheme}: needs a remote name and an image",
            hint=f"write {scheme}:REMOTE:" + ("NAME" if scheme.endswith("registry") else "TRANSPORT:NAME"),
        )
    if not _REMOTE_RE.fullmatch(remote):
        raise _bad(text, f"{remote!r} is not a valid ostree remote name")
    inner_text = f"docker://{image}" if scheme == "ostree-remote-registry" else _transport_form(image)
    return _parse_unsigned(text, inner_text).with_remote(remote)


def _transport_form(image: str) -> str:
    """ostree-ext's `registry:NAME` is skopeo's `docker://NAME`; a transport is required here."""
    if image.startswith("registry:"):
        return "docker://" + image.removeprefix("registry:")
    return image


def parse_reference(text: str) -> Reference:
    """Parse a reference as users write it; BadReference (exit 2) with a hint otherwise."""
    raw = text.strip()
    if not raw:
        raise _bad(text, "it is empty")
    if any(c.isspace() for c in raw):
        raise _bad(text, "it contains white space")
    signed = _parse_signed(text, raw)
    return signed if signed is not None else _parse_unsigned(text, raw)


def _parse_unsigned(text: str, raw: str) -> Reference:
    for prefix in ("ostree-unverified-registry:",):
        if raw.startswith(prefix):
            return _parse_registry(text, raw.removeprefix(prefix))
    if raw.startswith("ostree-unverified-image:"):
        inner = raw.removeprefix("ostree-unverified-image:")
        if inner.startswith("registry:"):
            inner = inner.removeprefix("registry:")
        return _parse_unsigned(text, inner)
    if raw.startswith("docker://"):
        return _parse_registry(text, raw.removeprefix("docker://"))
    scheme, sep, rest = raw.partition(":")
    if sep and scheme in _UNSUPPORTED:
        raise _bad(text, f"the {scheme}: transport is not supported", hint=_UNSUPPORTED[scheme])
    if sep and scheme in (Transport.OCI, Transport.OCI_ARCHIVE, Transport.DOCKER_ARCHIVE):
        return _parse_path(text, Transport(scheme), rest)
    if sep and scheme == Transport.CONTAINERS_STORAGE:
        if not rest:
            raise _bad(text, "containers-storage: needs an image name or id")
        return Reference(Transport.CONTAINERS_STORAGE, rest)
    if sep and scheme == "docker":
        raise _bad(text, "the docker transport is written docker://HOST/NAME")
    try:
        return _parse_registry(text, raw)
    except BadReference as e:
        raise _local_mistake(text, raw) or e from None


_TRANSPORTS = (*(t.value for t in Transport if t is not Transport.REGISTRY), "docker", *_UNSUPPORTED)


def _local_mistake(text: str, raw: str) -> BadReference | None:
    """What a reference that is not a registry's most likely meant: a transport with a typo
    (`oci-archve:FILE`) or a local file or directory written without its transport (`./os.tar`)."""
    scheme, sep, rest = raw.partition(":")
    close = difflib.get_close_matches(scheme.lower(), _TRANSPORTS, n=1, cutoff=0.6) if sep else []
    if close:
        return _bad(text, f"unknown transport {scheme + ':'!r}", hint=f"did you mean {close[0]}:{rest}?")
    path = Path(raw).expanduser()
    if path.is_dir():
        if (path / "index.json").is_file():
            return _bad(text, "a directory needs its transport", hint=f"did you mean oci:{raw}?")
        return _bad(text, "a directory without index.json is not an OCI layout", hint="write oci:DIR")
    if path.is_file():
        return _bad(
            text,
            "a file needs its transport",
            hint=f"did you mean oci-archive:{raw}? (docker-archive:{raw} for `docker save`/`podman save`)",
        )
    if raw.startswith(("./", "../", "/", "~")) or raw.endswith((".tar", ".ociarchive", ".oci")):
        return _bad(
            text, "no such file or directory", hint="a local image is written oci-archive:FILE or oci:DIR"
        )
    return None
