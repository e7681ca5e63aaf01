"""An HTTP client for the service (or any Weldr API server): Unix socket or http://HOST:PORT with a token.

Standard library only (http.client). Requests have the shapes composer-cli sends (research §2), so the
same client drives the service from the command line and from the tests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError

DEFAULT_SOCKET = Path(os.environ.get("IMGBUILD_SOCKET", "/run/imgbuild/api.socket"))
API = "/api/v1"
SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ServiceError(ImgbuildError):
    """The service could not be reached or refused a request."""


class ComposeFailed(ServiceError):
    """A compose ended FAILED (the build failed, not the request)."""

    exit_code = 1


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise ServiceError(
                f"the service answered HTTP {self.status} with a body that is not JSON"
            ) from None


def weldr_errors(data: Any) -> str | None:
    """'ID: msg' of a Weldr error body, or None when the body is not one."""
    if isinstance(data, dict) and data.get("status") is False:
        errors = data.get("errors") or [{}]
        first = errors[0] if isinstance(errors[0], dict) else {}
        return f"{first.get('id', 'Error')}: {first.get('msg', '')}"
    return None


class WeldrClient:
    def __init__(
        self,
        *,
        socket_path: Path | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.token = token
        self.timeout = timeout
        self.socket_path = socket_path
        self.base: urllib.parse.SplitResult | None = None
        if url is not None:
            self.base = urllib.parse.urlsplit(url)
            if self.base.scheme != "http" or not self.base.hostname:
                raise ServiceError(f"unsupported service URL {url!r}", hint="use http://HOST:PORT")
        elif socket_path is None:
            self.socket_path = DEFAULT_SOCKET

    @property
    def where(self) -> str:
        return self.base.geturl() if self.base is not None else str(self.socket_path)

    def _connection(self) -> http.client.HTTPConnection:
        if self.base is not None:
            return http.client.HTTPConnection(
                self.base.hostname or "", self.base.port or 80, timeout=self.timeout
            )
        assert self.socket_path is not None
        return UnixHTTPConnection(self.socket_path, self.timeout)

    def _send(
        self, method: str, path: str, body: bytes | None, content_type: str | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        headers = {"Accept": "*/*"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers)
            return conn, conn.getresponse()
        except OSError as e:
            conn.close()
            raise ServiceError(
                f"cannot reach the imgbuild service at {self.where}: {e.strerror or e}",
                hint="start it with `imgbuild serve`, or pass --socket/--url",
            ) from None

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Reply:
        """One request, the whole answer read (no error checking: tests look at raw answers)."""
        conn, response = self._send(method, path, body, content_type)
        try:
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        """A request whose answer is JSON; ServiceError for a Weldr error or an HTTP error status."""
        reply = self.request(method, path, body, content_type)
        if reply.status == 401:
            raise ServiceError("the service refused the token", hint="check --token-file")
        data = reply.json() if reply.body.strip() else {}
        error = weldr_errors(data)
        if error is not None:
            raise ServiceError(f"the service refused: {error}")
        if reply.status >= 400:
            raise ServiceError(f"the service answered HTTP {reply.status} to {method} {path}")
        return data

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def download(self, path: str, directory: Path) -> Path:
        """Stream a file answer into `directory` under the name its Content-Disposition gives."""
        conn, response = self._send("GET", path, None, None)
        try:
            if response.status != 200 or "json" in (response.getheader("Content-Type") or ""):
                body = response.read()
                try:
                    error = weldr_errors(json.loads(body))
                except ValueError:
                    error = None
                raise ServiceError(f"the service refused: {error or f'HTTP {response.status}'}")
            disposition = response.getheader("Content-Disposition") or ""
            name = disposition.rpartition("filename=")[2].strip().strip('"')
            if not SAFE_FILENAME.match(name):
                raise ServiceError(f"the service named the download {name!r}, which is not a plain file name")
            target = directory / name
            partial = directory / f".{name}.partial"
            try:
                with open(partial, "wb") as out:
                    while chunk := response.read(1024 * 1024):
                        out.write(chunk)
                partial.rename(target)
            finally:
                partial.unlink(missing_ok=True)
            return target
        finally:
            conn.close()


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("service connection")
    group.add_argument("--socket", type=Path, help=f"the service's Unix socket (default {DEFAULT_SOCKET})")
    group.add_argument("--url", help="the service's TCP address, http://HOST:PORT (needs --token-file)")
    group.add_argument("--token-file", type=Path, help="file holding the bearer token for --url")


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ImgbuildError(f"cannot read the token file {path}: {e.strerror}") from None
    if not token or "\n" in token:
        raise ImgbuildError(f"the token file {path} must hold one non-empty line")
    return token


def client_from_args(args: argparse.Namespace) -> WeldrClient:
    token = read_token(args.token_file) if args.token_file is not None else None
    if args.url is not None:
        return WeldrClient(url=args.url, token=token)
    return WeldrClient(socket_path=args.socket or DEFAULT_SOCKET, token=token)


def client_actions(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> Callable[[str, str], argparse.ArgumentParser]:
    """A client command `name` with sub-actions; returns a function adding an action with the connection
    options (--socket, --url, --token-file)."""
    parser = sub.add_parser(name, help=help_text)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def action(action_name: str, action_help: str) -> argparse.ArgumentParser:
        child = actions.add_parser(action_name, help=action_help)
        add_connection_arguments(child)
        return child

    return action
