"""Weldr API shapes: error ids, the error exception, name/UUID validation and blueprint version bumps.

Pure functions only (no I/O), so the routes, the store and the tests share one definition of what
composer (osbuild-composer's internal/weldr) answers.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from targets import all_targets

# The compose types that exist only with an upload, and the provider each uploads to: the builder's command
# of the same name builds the target and uploads it (`imgbuild ami`).
UPLOAD_COMPOSE_TYPES = {"ami": "aws"}

# The output formats a compose can produce: the builder's commands of the same names (the targets registry).
COMPOSE_TYPES: tuple[str, ...] = tuple(all_targets())

# The MIME type `compose/image` answers with, per compose type.
IMAGE_MIME_TYPES = {name: target.mime for name, target in all_targets().items()}

# Error ids, as composer spells them.
BLUEPRINTS_ERROR = "BlueprintsError"
UNKNOWN_BLUEPRINT = "UnknownBlueprint"
INVALID_CHARS = "InvalidChars"
UNKNOWN_UUID = "UnknownUUID"
BUILD_IN_WRONG_STATE = "BuildInWrongState"
COMPOSE_ERROR = "ComposeError"
BAD_LIMIT_OR_OFFSET = "BadLimitOrOffset"
UNKNOWN_COMMIT = "UnknownCommit"
MISSING_POST = "MissingPost"
HTTP_ERROR = "HTTPError"
UNAUTHORIZED = "Unauthorized"
INTERNAL_ERROR = "InternalError"

INVALID_CHARS_MSG = "Invalid characters in API path"

# composer's ValidBlueprintName; commit ids and compose ids are checked against the same alphabet first.
VALID_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
# Characters a decoded API path may contain at all: names, "/", "," (name lists) and "*" (compose status).
VALID_PATH = re.compile(r"^[a-zA-Z0-9._,*/-]*$")
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


@dataclass
class WeldrError(Exception):
    """An error answered in Weldr's shape: {"status": false, "errors": [{"id", "msg"}]}."""

    id: str
    msg: str
    http_status: int = 400

    def __str__(self) -> str:
        return f"{self.id}: {self.msg}"

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"id": self.id, "msg": self.msg}
        if self.http_status == 404:
            error["code"] = 404
        return {"status": False, "errors": [error]}


def not_found() -> WeldrError:
    return WeldrError(HTTP_ERROR, "Not Found", 404)


def invalid_chars() -> WeldrError:
    return WeldrError(INVALID_CHARS, INVALID_CHARS_MSG)


def check_name(name: str) -> str:
    """A blueprint name (or commit id) from a path or a body; `.` and `..` are refused too."""
    if not VALID_NAME.match(name) or name in (".", ".."):
        raise invalid_chars()
    return name


def check_names(text: str) -> list[str]:
    """A comma-separated list of names, as `info/a,b` takes."""
    return [check_name(name) for name in text.split(",")]


def check_uuid(text: str) -> str:
    """A compose id: the alphabet first (InvalidChars), then a real UUID (UnknownUUID)."""
    check_name(text)
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        raise WeldrError(UNKNOWN_UUID, f"{text} is not a valid build uuid") from None
    if str(parsed) != text.lower():
        raise WeldrError(UNKNOWN_UUID, f"{text} is not a valid build uuid")
    return str(parsed)


def check_version(version: str) -> str:
    if not SEMVER.match(version):
        raise WeldrError(BLUEPRINTS_ERROR, f"Invalid 'version', must use Semantic Versioning: {version}")
    return version


def bump_patch(version: str) -> str:
    """1.2.3 -> 1.2.4 (a pre-release or build suffix is dropped, as Image Builder's semver does)."""
    match = SEMVER.match(version)
    if match is None:
        return "0.0.1"
    major, minor, patch = (int(part) for part in match.groups())
    return f"{major}.{minor}.{patch + 1}"


def next_version(pushed: str, stored: str | None) -> str:
    """The version a push is saved under: Image Builder bumps the patch level when the pushed version
    is empty or equal to the stored one; a first push without a version is 0.0.0."""
    if stored is None:
        return pushed or "0.0.0"
    if not pushed or pushed == stored:
        return bump_patch(stored)
    return pushed


def page_bounds(query: dict[str, list[str]], default_limit: int = 20) -> tuple[int, int]:
    """offset and limit from a query string (BadLimitOrOffset when they are not non-negative integers)."""

    def one(key: str, default: int) -> int:
        values = query.get(key)
        if not values:
            return default
        text = values[-1]
        if not text.isdigit() or len(text) > 9:
            raise WeldrError(BAD_LIMIT_OR_OFFSET, f"BadRequest: invalid {key} {text!r}")
        return int(text)

    return one("offset", 0), one("limit", default_limit)


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """A request body that must be a JSON object; anything else is a Weldr error naming `what`."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WeldrError(COMPOSE_ERROR, f"malformed {what}: {e}") from None
    if not isinstance(data, dict):
        raise WeldrError(COMPOSE_ERROR, f"malformed {what}: not a JSON object")
    return data
