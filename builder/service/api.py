"""What a route sees and returns: the parsed request, the response, and the service's shared parts."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from builder.service.queue import ComposeQueue, QueueConfig
from builder.service.refpolicy import RefPolicy
from builder.service.store import Store

if TYPE_CHECKING:
    from builder.service.farm import Farm
    from builder.service.objstore import ObjectStore


@dataclass(frozen=True)
class Context:
    store: Store
    queue: ComposeQueue
    config: QueueConfig
    default_ref: str | None = None  # used when a compose request names no container
    policy: RefPolicy = field(default_factory=lambda: RefPolicy.from_args(()))  # which images may be built
    farm: Farm | None = None  # remote workers (None: the service has no worker token)
    objects: ObjectStore | None = None  # remote workers' images go there (serve --object-store)


@dataclass(frozen=True)
class Request:
    method: str
    args: tuple[str, ...]  # the path segments after the route's own
    query: Mapping[str, list[str]]
    content_type: str | None
    body: bytes

    def param(self, key: str, default: str = "") -> str:
        values = self.query.get(key)
        return values[-1] if values else default


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    file: Path | None = None  # sent as the body (Content-Length from its size)
    size: int | None = None  # with `stream`: the body's length (sent as Content-Length, not chunked)
    stream: Callable[[BinaryIO], None] | None = field(default=None)  # writes a chunked body


def json_response(data: object, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(data).encode() + b"\n")


def ok() -> Response:
    return json_response({"status": True})


def attachment(filename: str) -> tuple[str, str]:
    return ("Content-Disposition", f"attachment; filename={filename}")


Handler = Callable[[Context, Request], Response]
