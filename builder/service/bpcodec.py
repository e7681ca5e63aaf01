"""Blueprints at the API's edge: decode a pushed body (TOML or JSON), validate it, encode it as TOML.

The service stores a blueprint as the plain document the user pushed (with its version bumped), as
composer does; validation is `builder.blueprint.parse_blueprint` (the same parser the command line uses)
once that module exists, and plain TOML/JSON parsing until then. `_validator()` is the one switch.
"""

from __future__ import annotations

import importlib
import json
import tomllib
from collections.abc import Callable
from typing import Any

import tomli_w

from builder.blueprint.document import CRYPTED_PREFIXES
from builder.customize.passwords import sha512_crypt
from builder.errors import BlueprintError
from builder.service.store import BlueprintDoc
from builder.service.weldr import BLUEPRINTS_ERROR, WeldrError, check_name, check_version

BAD_REQUEST = "400 Bad Request: The browser (or proxy) sent a request that this server could not understand: "

MEDIA_FORMATS = {"text/x-toml": "toml", "application/json": "json"}


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _validator() -> Callable[[str, str, str], object] | None:
    """builder.blueprint.parse_blueprint(text, fmt, origin), or None while that module does not exist."""
    try:
        module = importlib.import_module("builder.blueprint")
    except ModuleNotFoundError as e:
        if e.name != "builder.blueprint":
            raise
        return None
    parse: Callable[[str, str, str], object] | None = getattr(module, "parse_blueprint", None)
    return parse


def _plain(value: Any, where: str) -> Any:
    """JSON-compatible data only (TOML dates have no JSON form); JSON nulls are dropped as Go does."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value) if v is not None]
    if isinstance(value, str | bool | int | float):
        return value
    raise WeldrError(BLUEPRINTS_ERROR, f"{BAD_REQUEST}unsupported value at {where.lstrip('.')}")


def decode_blueprint(
    body: bytes, content_type: str | None, stored: Callable[[str], BlueprintDoc | None] = lambda name: None
) -> BlueprintDoc:
    """A pushed blueprint body as a document with a valid name and version (WeldrError otherwise), its
    plain-text passwords hashed. `stored(name)` is the blueprint stored under that name, whose hash is
    kept for a password pushed again unchanged (a new salt would show as a change in every diff)."""
    if not content_type:
        raise WeldrError(BLUEPRINTS_ERROR, "missing Content-Type header")
    if not body:
        raise WeldrError(BLUEPRINTS_ERROR, "Missing blueprint")
    fmt = MEDIA_FORMATS.get(media_type(content_type))
    if fmt is None:
        raise WeldrError(BLUEPRINTS_ERROR, f"{BAD_REQUEST}blueprint must be in json or toml format")
    try:
        text = body.decode("utf-8")
        raw = json.loads(text) if fmt == "json" else tomllib.loads(text)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise WeldrError(BLUEPRINTS_ERROR, f"{BAD_REQUEST}{e}") from None
    if not isinstance(raw, dict):
        raise WeldrError(BLUEPRINTS_ERROR, f"{BAD_REQUEST}a blueprint is a table/object")
    doc: BlueprintDoc = _plain(raw, "")
    name = doc.get("name")
    if not isinstance(name, str):
        raise WeldrError(BLUEPRINTS_ERROR, "empty blueprint name not allowed")
    check_name(name)
    version = doc.get("version", "")
    if not isinstance(version, str):
        raise WeldrError(BLUEPRINTS_ERROR, f"Invalid 'version', must use Semantic Versioning: {version}")
    if version:
        check_version(version)
    validate = _validator()
    if validate is not None:
        try:
            validate(text, fmt, f"blueprint {name}")
        except BlueprintError as e:
            raise WeldrError(BLUEPRINTS_ERROR, e.message) from None
    return hash_passwords(doc, stored(name))[0]


def _stored_hashes(doc: BlueprintDoc | None) -> dict[str, str]:
    custom = doc.get("customizations") if doc else None
    users = custom.get("user") if isinstance(custom, dict) else None
    hashes: dict[str, str] = {}
    for user in users if isinstance(users, list) else []:
        if (
            isinstance(user, dict)
            and isinstance(user.get("password"), str)
            and isinstance(user.get("name"), str)
        ):
            hashes[user["name"]] = user["password"]
    return hashes


def _hash(password: str, previous: str | None) -> str:
    """SHA-512 crypt; the previous hash when it is the same password's (same salt, same result)."""
    if previous is not None and previous.startswith("$6$") and previous.count("$") >= 3:
        salt = previous.split("$")[2]
        if sha512_crypt(password, salt) == previous:
            return previous
    return sha512_crypt(password)


def hash_passwords(doc: BlueprintDoc, previous: BlueprintDoc | None = None) -> tuple[BlueprintDoc, bool]:
    """The blueprint with every plain-text user password replaced by its SHA-512 crypt hash, as Image
    Builder does at push time (so no answer, log, tar or database page ever holds it), and whether
    anything changed. A user's hash in `previous` is kept when it is this password's."""
    custom = doc.get("customizations")
    users = custom.get("user") if isinstance(custom, dict) else None
    if not isinstance(users, list):
        return doc, False
    changed = False
    hashed_users = []
    for user in users:
        password = user.get("password") if isinstance(user, dict) else None
        if isinstance(password, str) and password and not password.startswith(CRYPTED_PREFIXES):
            user = {**user, "password": _hash(password, _stored_hashes(previous).get(str(user.get("name"))))}
            changed = True
        hashed_users.append(user)
    if not changed:
        return doc, False
    assert isinstance(custom, dict)
    return {**doc, "customizations": {**custom, "user": hashed_users}}, True


LIST_KEYS = ("packages", "modules", "groups")


def weldr_view(doc: BlueprintDoc) -> BlueprintDoc:
    """The blueprint as composer answers it in JSON: the package lists always present (composer-cli
    reads them), empty here since a container image brings its own packages."""
    return {**{key: [] for key in LIST_KEYS}, **doc}


def encode_toml(doc: BlueprintDoc) -> str:
    return tomli_w.dumps(doc)
