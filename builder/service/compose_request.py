"""A compose request (`POST /compose`) checked field by field: nothing imgbuild cannot honour is dropped.

The container image a compose builds comes from, in this order:
1. the request: `"container_ref"` (imgbuild's field), `{"bootc": {"reference"}}` (Image Builder's
   cloud API) or `"ostree": {"url"}` (what `composer-cli compose start-ostree --url REF` fills);
   several of them must agree;
2. the blueprint's top-level `container_ref` (a request naming another image is refused);
3. the service's `--default-ref`.
The result then passes the operator's reference policy (refpolicy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from builder.arch import Arch
from builder.errors import ImgbuildError
from builder.service.refpolicy import RefPolicy, RefusedReference
from builder.service.store import BlueprintDoc
from builder.service.uploads import AwsUpload, parse_upload
from builder.service.weldr import COMPOSE_ERROR, COMPOSE_TYPES, WeldrError, check_name, invalid_chars

# printable, no spaces, never starting with "-" (it becomes an argument of the builder's command line)
VALID_REF = re.compile(r"^[A-Za-z0-9][\x21-\x7e]{0,1023}$")
BLUEPRINT_REF_KEY = "container_ref"
MiB = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024 * MiB  # 4 TiB: far above any disk image, far below SQLite's and ext4's limits
_OSTREE_KEYS = {"ref", "parent", "url", "contenturl", "rhsm"}
NO_REF_MSG = (
    "the compose names no container image: pass it with `composer-cli compose start-ostree NAME TYPE "
    '--url REF`, put `container_ref = "REF"` at the top of the blueprint, send "container_ref" in the '
    "request, or start the service with --default-ref REF"
)


@dataclass(frozen=True)
class ComposeRequest:
    blueprint_name: str
    compose_type: str
    size: int
    requested_ref: str | None  # the image the request itself names
    upload: AwsUpload | None
    arch: str | None = None  # "arch" (imgbuild's field): built by a worker labelled arch:ARCH


def _ostree_ref(ostree: object) -> str | None:
    """`ostree.url` as the container reference; `ref`, `parent` and the rest are refused when set."""
    if ostree is None:
        return None
    if not isinstance(ostree, dict):
        raise WeldrError(COMPOSE_ERROR, "ostree must be an object")
    unknown = sorted(set(ostree) - _OSTREE_KEYS)
    if unknown:
        raise WeldrError(COMPOSE_ERROR, f"unknown ostree field {unknown[0][:40]!r}")
    for key, option in (
        ("ref", "--ref"),
        ("parent", "--parent"),
        ("contenturl", "contenturl"),
        ("rhsm", "rhsm"),
    ):
        if ostree.get(key):
            raise WeldrError(
                COMPOSE_ERROR,
                f"imgbuild cannot honour the ostree {option} option: it deploys the container image's own "
                "commit; name the image with --url REF",
            )
    url = ostree.get("url") or None
    if url is not None and not isinstance(url, str):
        raise WeldrError(COMPOSE_ERROR, "ostree.url must be a string")
    return url


def _requested_ref(body: dict[str, Any]) -> str | None:
    named: list[str] = []
    if body.get("container_ref") is not None:
        named.append(body["container_ref"])
    bootc = body.get("bootc")
    if bootc is not None:
        if not isinstance(bootc, dict) or set(bootc) - {"reference"}:
            raise WeldrError(COMPOSE_ERROR, 'bootc must be {"reference": REF}')
        if bootc.get("reference") is not None:
            named.append(bootc["reference"])
    url = _ostree_ref(body.get("ostree"))
    if url is not None:
        named.append(url)
    for ref in named:
        if not isinstance(ref, str):
            raise WeldrError(COMPOSE_ERROR, "a container reference is a string")
    if len(set(named)) > 1:
        raise WeldrError(COMPOSE_ERROR, "the request names different container images: name one")
    return named[0] if named else None


def _size(body: dict[str, Any]) -> int:
    size = body.get("size", 0) or 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise WeldrError(COMPOSE_ERROR, f"invalid size {str(size)[:40]!r}: a number of bytes")
    if size > MAX_SIZE:
        raise WeldrError(
            COMPOSE_ERROR,
            f"size {size} bytes is too large: at most {MAX_SIZE} "
            f"(4 TiB, composer-cli --size {MAX_SIZE // MiB})",
        )
    return size


def parse_request(body: dict[str, Any]) -> ComposeRequest:
    name = body.get("blueprint_name")
    if not isinstance(name, str):
        raise invalid_chars()
    check_name(name)
    compose_type = body.get("compose_type")
    if compose_type not in COMPOSE_TYPES:
        raise WeldrError(
            COMPOSE_ERROR,
            f"Failed to get compose type {str(compose_type)[:40]!r}: "
            f"the types are {', '.join(COMPOSE_TYPES)}",
        )
    return ComposeRequest(
        name,
        str(compose_type),
        _size(body),
        _requested_ref(body),
        parse_upload(body.get("upload")),
        _arch(body.get("arch")),
    )


def _arch(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WeldrError(COMPOSE_ERROR, "arch: x86_64 or aarch64")
    try:
        return Arch.parse(value).value
    except ImgbuildError as e:
        raise WeldrError(COMPOSE_ERROR, f"{e.message} ({e.hint})") from None


def choose_ref(
    request: ComposeRequest, blueprint: BlueprintDoc, default: str | None, policy: RefPolicy
) -> str:
    """The reference the builder gets (see the module's docstring), checked against the policy."""
    in_blueprint = blueprint.get(BLUEPRINT_REF_KEY)
    ref = request.requested_ref
    if ref is not None and in_blueprint is not None and ref != in_blueprint:
        raise WeldrError(
            COMPOSE_ERROR,
            f"the request names {ref[:200]!r} but blueprint {request.blueprint_name} names "
            f"{str(in_blueprint)[:200]!r} (container_ref): name the same image, or remove it from one",
        )
    ref = ref or in_blueprint or default
    if ref is None:
        raise WeldrError(COMPOSE_ERROR, NO_REF_MSG)
    if not isinstance(ref, str) or not VALID_REF.match(ref):
        raise WeldrError(COMPOSE_ERROR, f"invalid container reference {str(ref)[:100]!r}")
    try:
        return policy.check(ref)
    except RefusedReference as e:
        raise WeldrError(COMPOSE_ERROR, f"{e.message} ({e.hint})") from None


def builder_blueprint(blueprint: BlueprintDoc) -> BlueprintDoc:
    """The blueprint the builder gets: the image is its command-line argument, not a blueprint key."""
    return {k: v for k, v in blueprint.items() if k != BLUEPRINT_REF_KEY}
