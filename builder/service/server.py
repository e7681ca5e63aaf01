"""The HTTP/1.1 side of the service: a Unix socket (and optionally TCP with a bearer token), the router.

Standard library only: socketserver's threading servers and http.server's request handler. Every answer
is Weldr-shaped: a route's WeldrError becomes {"status": false, "errors": [...]}; a bug becomes a 500 with
a generic message (the traceback goes to the service's log, never to the client).
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import hmac
import json
import logging
import os
import shutil
import socket
import socketserver
import stat
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

from sqlalchemy.engine import URL

from builder import __version__
from builder.errors import ImgbuildError
from builder.service import routes_blueprints, routes_compose, routes_packages, routes_worker
from builder.service.api import Context, Handler, Request, Response, json_response
from builder.service.defaults import DEFAULT_SOCKET, DEFAULT_STATE
from builder.service.farm import Farm
from builder.service.migrate import migrate_passwords
from builder.service.objstore import PART_SIZE, ObjectStore
from builder.service.queue import ComposeQueue, QueueConfig
from builder.service.refpolicy import RefPolicy
from builder.service.statelock import LOCK_NAME, StateLock
from builder.service.store import STATE_DB, Store
from builder.service.weldr import (
    BLUEPRINTS_ERROR,
    BUILD_IN_WRONG_STATE,
    HTTP_ERROR,
    INTERNAL_ERROR,
    UNAUTHORIZED,
    VALID_PATH,
    WeldrError,
    invalid_chars,
    not_found,
)

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024  # blueprints are kilobytes; anything near this is a mistake or an attack
DRAIN_LIMIT = (
    64 * 1024 * 1024
)  # a body above MAX_BODY but below this is read and dropped, not answered mid-way
API_VERSIONS = ("v0", "v1")
ROUTES = (
    routes_blueprints.ROUTES + routes_compose.ROUTES + routes_packages.ROUTES + routes_worker.CLIENT_ROUTES
)
WORKER_PREFIX = ("", "api", "worker", "v1")
HEARTBEAT_TIMEOUT = 60.0
STATUS = {
    "api": "1",
    "db_supported": True,
    "db_version": "0",
    "schema_version": "0",
    "backend": "imgbuild",
    "build": __version__,
    "msgs": [],
}


@dataclass(frozen=True)
class ServiceConfig:
    state_dir: Path = DEFAULT_STATE
    socket_path: Path | None = DEFAULT_SOCKET
    group: str | None = None
    listen: tuple[str, int] | None = None
    token: str | None = None  # required with `listen`
    workers: int = 1  # local builds at a time; 0: remote workers only
    database: URL | None = None  # None: SQLite in the state directory
    worker_token: str | None = None  # remote workers' bearer token (the worker API is off without one)
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT  # a remote worker silent this long has lost its compose
    object_store: str | None = None  # s3://BUCKET[/PREFIX]: remote workers' images go there (objstore)
    object_part_size: int = PART_SIZE  # above this, a multipart upload of parts this large
    default_ref: str | None = None
    allow_refs: tuple[str, ...] = ()  # `--allow-ref` patterns (refpolicy); none: registries only
    builder_command: tuple[str, ...] = (sys.executable, "-m", "builder")
    max_body: int = MAX_BODY
    grace: float = 10.0


def split_path(raw: str) -> tuple[list[str], dict[str, list[str]]]:
    """Path segments and query of a request target; InvalidChars for anything outside the names'
    alphabet after percent-decoding (NUL, `%2e%2e`, `..`, spaces, non-ASCII)."""
    path, _, query_text = raw.partition("?")
    try:
        decoded = urllib.parse.unquote_to_bytes(path).decode("ascii")
        query = urllib.parse.parse_qs(query_text, keep_blank_values=True, errors="strict")
    except (UnicodeError, ValueError):
        raise invalid_chars() from None
    if not VALID_PATH.match(decoded):
        raise invalid_chars()
    segments = decoded.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise invalid_chars()
    return segments, query


def is_worker_path(segments: list[str]) -> bool:
    return tuple(segments[:4]) == WORKER_PREFIX


def route(method: str, segments: list[str]) -> tuple[Handler, tuple[str, ...]] | None:
    """The handler and its arguments; None for a path that exists with another method (405);
    WeldrError 404 for an unknown path."""
    if segments and segments[-1] == "" and len(segments) > 1:
        segments = segments[:-1]  # one trailing slash is tolerated
    worker = is_worker_path(segments)
    if not worker and (len(segments) < 4 or segments[:2] != ["", "api"] or segments[2] not in API_VERSIONS):
        raise not_found()
    rest = segments[4:] if worker else segments[3:]
    if "" in rest or not rest:
        raise not_found()
    other_method = False
    for route_method, prefix, nargs, handler in routes_worker.ROUTES if worker else ROUTES:
        if tuple(rest[: len(prefix)]) == prefix and len(rest) == len(prefix) + nargs:
            if route_method == method:
                return handler, tuple(rest[len(prefix) :])
            other_method = True
    if other_method:
        return None
    raise not_found()


def dispatch(ctx: Context, method: str, target: str, content_type: str | None, body: bytes) -> Response:
    segments, query = split_path(target)
    if segments == ["", "api", "status"]:
        return json_response(STATUS) if method == "GET" else Response(status=405, content_type="text/plain")
    found = route(method, segments)
    if found is None:
        return Response(status=405, content_type="text/plain")
    handler, args = found
    return handler(ctx, Request(method, args, query, content_type, body))


class ChunkedWriter:
    """HTTP/1.1 chunked transfer encoding over the connection, for bodies of unknown length."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        if data:
            self.out.write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    def finish(self) -> None:
        self.out.write(b"0\r\n\r\n")


class WeldrRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "imgbuild"
    timeout = 300  # an idle keep-alive connection ends, and its thread with it

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    @property
    def _weldr(self) -> WeldrServerMixin:
        return cast(WeldrServerMixin, self.server)

    def _authorized(self) -> bool:
        """Worker routes: the worker token, on every listener. The others: the client token on TCP."""
        if self.path.startswith("/api/worker/"):
            expected = self._weldr.worker_digest
        elif self._weldr.token is None:
            return True
        else:
            expected = token_digest(self._weldr.token)
        if expected is None:
            return False
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token_digest(given.strip()), expected)

    def _upload(self, ctx: Context) -> Response | None:
        """PUT /api/worker/v1/output/ID/NAME, whose body is streamed to a file (not read into memory)."""
        segments, query = split_path(self.path)
        if self.command != "PUT" or len(segments) != 7 or segments[:5] != [*WORKER_PREFIX, "output"]:
            return None
        text = self.headers.get("Content-Length") or ""
        if self.headers.get("Transfer-Encoding") or not text.strip().isdigit():
            self.close_connection = True
            raise WeldrError(BLUEPRINTS_ERROR, "an output upload needs Content-Length")
        request = Request("PUT", tuple(segments[5:]), query, self.headers.get("Content-Type"), b"")
        try:
            return routes_worker.receive_output(
                ctx, request.args, request, cast(BinaryIO, self.rfile), int(text)
            )
        except WeldrError:
            self.close_connection = True  # the body may be unread
            raise

    def _drop_body(self, limit: int) -> None:
        """Read and drop a body of up to `limit` bytes that will not be used: a client still writing it
        would otherwise get EPIPE instead of the answer. A larger one stays unread (the connection closes)."""
        text = self.headers.get("Content-Length") or "0"
        length = int(text) if text.strip().isdigit() and not self.headers.get("Transfer-Encoding") else 0
        if length <= limit:
            while length > 0 and (chunk := self.rfile.read(min(length, 1 << 16))):
                length -= len(chunk)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise WeldrError(
                BLUEPRINTS_ERROR, "chunked request bodies are not supported: send Content-Length"
            )
        text = self.headers.get("Content-Length") or "0"
        if not text.strip().isdigit():
            self.close_connection = True
            raise WeldrError(BLUEPRINTS_ERROR, f"invalid Content-Length {text!r}")
        length = int(text)
        if length > self._weldr.max_body:
            self.close_connection = True
            self._drop_body(DRAIN_LIMIT)
            raise WeldrError(
                BLUEPRINTS_ERROR,
                f"request body too large ({length} bytes, the limit is {self._weldr.max_body})",
            )
        return self.rfile.read(length) if length else b""

    def _serve(self, method: str) -> None:
        ctx = self._weldr.ctx
        try:
            if not self._authorized():
                self.close_connection = True
                self._drop_body(self._weldr.max_body)
                error = WeldrError(UNAUTHORIZED, "missing or wrong bearer token", 401)
                response = json_response(error.body(), 401)
                response = Response(
                    status=401, body=response.body, headers=(("WWW-Authenticate", 'Bearer realm="imgbuild"'),)
                )
            else:
                upload = self._upload(ctx)
                if upload is not None:
                    response = upload
                else:
                    body = self._read_body()
                    response = dispatch(ctx, method, self.path, self.headers.get("Content-Type"), body)
        except WeldrError as e:
            response = json_response(e.body(), e.http_status)
        except Exception:
            log.exception("%s %s failed", method, self.path)
            error = WeldrError(INTERNAL_ERROR, "internal error: see the service's log", 500)
            response = json_response(error.body(), 500)
        finally:
            ctx.store.close_thread_connection()
        self._send(response)

    def _send(self, response: Response) -> None:
        if response.file is not None:
            try:
                image = open(response.file, "rb")  # noqa: SIM115 - opened before the status line is sent
            except OSError as e:
                error = WeldrError(BUILD_IN_WRONG_STATE, f"the image is gone: {e.strerror}")
                response = json_response(error.body(), 400)
            else:
                with image:
                    self._send_headers(response, ("Content-Length", str(os.fstat(image.fileno()).st_size)))
                    self.wfile.flush()
                    self.connection.sendfile(image)
                return
        if response.stream is not None and response.size is not None:
            self._send_headers(response, ("Content-Length", str(response.size)))
            try:
                response.stream(cast(BinaryIO, self.wfile))
            except Exception:
                log.exception("streaming %s failed", self.path)
                self.close_connection = True  # the client sees a short body, never a wrong one
            return
        if response.stream is not None:
            self._send_headers(response, ("Transfer-Encoding", "chunked"))
            writer = ChunkedWriter(cast(BinaryIO, self.wfile))
            try:
                response.stream(cast(BinaryIO, writer))
            except Exception:
                log.exception("streaming %s failed", self.path)
                self.close_connection = True  # the client sees a truncated body, never a wrong one
                return
            writer.finish()
            return
        self._send_headers(response, ("Content-Length", str(len(response.body))))
        self.wfile.write(response.body)

    def _send_headers(self, response: Response, length: tuple[str, str]) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header(*length)
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, headers too long, unknown method) in Weldr's
        shape instead of its HTML page."""
        self.close_connection = True
        error = WeldrError(HTTP_ERROR, message or HTTPStatus(code).phrase, code)
        body = json.dumps(error.body()).encode() + b"\n"
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def address_string(self) -> str:
        address = self.client_address
        return str(address[0]) if isinstance(address, tuple) and address else "unix"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def token_digest(token: str) -> bytes:
    """Tokens are compared, and kept in memory, as SHA-256 digests only."""
    return hashlib.sha256(token.encode()).digest()


class WeldrServerMixin:
    ctx: Context
    token: str | None
    worker_digest: bytes | None = None
    max_body: int
    request_queue_size = 128  # listen() backlog: socketserver's 5 refuses bursts of clients

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer is routine; anything else is logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("client went away: %s", error)
        else:
            log.exception("error while serving a request")


class UnixServer(WeldrServerMixin, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TCPServer(WeldrServerMixin, socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _group_id(group: str | None) -> int:
    if group is None:
        return -1
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ImgbuildError(f"no group named {group!r}", hint="create it or pass another --group") from None


def _missing_parents(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, outermost first (what a start may create)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    return list(reversed(missing))


def _bind_unix(path: Path, gid: int) -> UnixServer:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ImgbuildError(f"{path} exists and is not a socket", hint="choose another --socket")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left by a service that did not stop cleanly
            else:
                raise ImgbuildError(f"{path} is in use by a running service", hint="stop it first")
    old_umask = os.umask(0o117)  # the socket is never, even for a moment, wider than 0660
    try:
        server = UnixServer(str(path), WeldrRequestHandler)
    finally:
        os.umask(old_umask)
    path.chmod(0o660)
    if gid != -1:
        os.chown(path, -1, gid)
    return server


def _bind_tcp(host: str, port: int) -> TCPServer:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("TCPServerFamily", (TCPServer,), {"address_family": family})
    try:
        return cast(TCPServer, server_class((host, port), WeldrRequestHandler))
    except OSError as e:
        raise ImgbuildError(f"cannot listen on {host}:{port}: {e.strerror}") from None


class Service:
    """The state lock, the store, the compose queue and the HTTP servers, started and stopped together.

    Starting checks everything it can before creating anything, then takes the state directory's lock
    before it reads or changes the state (statelock). A start that fails removes what it created: the
    state directory, its files and the socket's directory, when they did not exist before.
    """

    def __init__(self, config: ServiceConfig) -> None:
        if config.listen is not None and not config.token:
            raise ImgbuildError("listening on TCP needs --token-file (every request must carry the token)")
        if config.worker_token is not None and config.worker_token == config.token:
            raise ImgbuildError(
                "the worker token is the client token", hint="give workers a token of their own"
            )
        if config.workers < 0:
            raise ImgbuildError("--workers must be 0 (remote workers only) or more")
        self.config = config
        self.policy = RefPolicy.from_args(config.allow_refs)
        if config.default_ref is not None:
            try:
                self.policy.check(config.default_ref)
            except ImgbuildError as e:
                raise ImgbuildError(
                    f"--default-ref {config.default_ref!r} is not allowed by the reference policy",
                    hint="add an --allow-ref pattern that matches it",
                ) from e
        queue_config = QueueConfig(
            config.state_dir,
            config.workers,
            config.builder_command,
            config.grace,
            remote_cancel_wait=config.heartbeat_timeout / 2,
        )
        self._queue_config = queue_config
        self.servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self._socket_bound = False
        self._lock = StateLock(config.state_dir)
        self._store: Store | None = None
        self._queue: ComposeQueue | None = None
        self._farm: Farm | None = None
        self._worker_digest = None if config.worker_token is None else token_digest(config.worker_token)
        self._objects = (
            None if config.object_store is None else ObjectStore(config.object_store, config.object_part_size)
        )

    @property
    def store(self) -> Store:
        assert self._store is not None, "the service is not started"
        return self._store

    @property
    def queue(self) -> ComposeQueue:
        assert self._queue is not None, "the service is not started"
        return self._queue

    def start(self) -> Service:
        gid = _group_id(self.config.group)
        if self._objects is not None:
            self._objects.check()  # before anything is created
        state = self.config.state_dir
        created = _missing_parents(state)
        if self.config.socket_path is not None:
            created += _missing_parents(self.config.socket_path.parent)
        state_files = [state / name for name in (LOCK_NAME, STATE_DB, "composes")]
        new_files = [path for path in state_files if not path.exists()]
        locked = False
        try:
            state.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock.acquire()
            locked = True
            self._store = Store(state, self.config.database)
            self._store.waker.start()
            migrated = migrate_passwords(self._store, state)
            if migrated:
                log.warning("hashed the plain-text passwords of %d stored blueprints", migrated)
            self._queue = ComposeQueue(self._store, self._queue_config)
            if self.config.worker_token is not None:
                self._farm = Farm(self._store, state, self.config.heartbeat_timeout)
            self.ctx = Context(
                self._store,
                self._queue,
                self._queue_config,
                self.config.default_ref,
                self.policy,
                self._farm,
                self._objects,
            )
            if self.config.socket_path is not None:
                self._add(_bind_unix(self.config.socket_path, gid), None)
                self._socket_bound = True
            if self.config.listen is not None:
                self._add(_bind_tcp(*self.config.listen), self.config.token)
            self._queue.start()
            if self._farm is not None:
                self._farm.start()
        except BaseException:
            self.stop()
            _remove_created(created, new_files if locked else [])
            raise
        return self

    def _add(self, server: UnixServer | TCPServer, token: str | None) -> None:
        server.ctx, server.token, server.max_body = self.ctx, token, self.config.max_body
        server.worker_digest = self._worker_digest
        self.servers.append(server)
        # a short poll interval: stopping the service waits for one poll at most
        thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name=f"http-{len(self.servers)}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    @property
    def tcp_address(self) -> tuple[str, int]:
        for server in self.servers:
            if isinstance(server, TCPServer):
                host, port = server.server_address[:2]
                return str(host), int(port)
        raise LookupError("not listening on TCP")

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self.servers.clear()
        self._threads.clear()
        if self.config.socket_path is not None and self._socket_bound:
            self._socket_bound = False
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(self.config.socket_path.lstat().st_mode):
                    self.config.socket_path.unlink()
        if self._farm is not None:
            self._farm.stop()
        if self._queue is not None:
            self._queue.stop()
        if self._store is not None:
            self._store.close()
        self._lock.release()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _remove_created(directories: list[Path], files: list[Path]) -> None:
    """Undo a failed start: the files it made in an existing state directory, then the directories it
    made (outermost first in `directories`, so each removal takes its children with it)."""
    for path in files:
        for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    candidate.unlink()
    for path in directories:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
