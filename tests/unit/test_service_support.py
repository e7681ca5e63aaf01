"""Shared parts of the service tests (no tests here): a client that sends what composer-cli sends, a
running service in a temporary directory, and a stand-in builder for composes that must finish without
root or an image (it follows the builder's command-line contract: TYPE REF --blueprint --output
--progress=json, writes the image and result.json into --output)."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from builder.service.server import Service, ServiceConfig
from builder.service.store import Store

REAL_BUILDER = (sys.executable, "-m", "builder")


class _Database:
    """The state database of the services and stores a test makes: None (SQLite in the state directory)
    or a fresh PostgreSQL database; set per test by the `service_database` fixture (tests/conftest.py)."""

    url: URL | None = None


DATABASE = _Database()


def open_store(state: Path) -> Store:
    """A Store on the test's database (what a service on `state` would open)."""
    return Store(state, DATABASE.url)


MISSING_IMAGE_REF = "oci-archive:/nonexistent/missing-image.ociarchive"
# The stand-in builder's references (oci:/standin/ok, .../fail, .../hang...) and the missing image: the
# policy of the test services (the real builds add the example image's directory).
TEST_ALLOWED_REFS = ("oci:/standin/*", "oci-archive:/nonexistent/*")

STANDIN_BUILDER = r"""
import hashlib, json, os, signal, sys, time
args = sys.argv[1:]
fmt, ref = args[0], args[1]
output = args[args.index("--output") + 1]
blueprint = args[args.index("--blueprint") + 1]
state = os.path.dirname(os.path.dirname(os.path.dirname(output)))
with open(os.path.join(state, "standin-runs.log"), "a") as runs:
    runs.write(os.path.basename(os.path.dirname(output)) + "\n")
def event(**fields):
    print(json.dumps(fields), flush=True)
def on_term(signum, frame):
    print("stopping on SIGTERM", flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
event(event="message", text=f"started pid={os.getpid()} blueprint={open(blueprint).read().count('name')}")
if ref == "oci:/standin/hang":
    time.sleep(120)
if ref.startswith("oci:/standin/sleep-"):
    time.sleep(float(ref.rsplit("-", 1)[1]))
    print("slept", ref.rsplit("-", 1)[1], flush=True)
if ref == "oci:/standin/slow":
    for n in range(10):
        event(event="message", text=f"step {n}")
        time.sleep(0.1)
if ref == "oci:/standin/fail":
    event(event="build-end", status="failed", error="the stand-in was asked to fail")
    sys.exit(1)
name = "../../escape" if ref == "oci:/standin/escape" else f"disk.{fmt}"
data = (fmt + ":" + ref + "\n").encode() * 1000
if ref == "oci:/standin/big":  # 9 MB: a multipart upload to an object store with 5 MiB parts
    data *= 400
if ref != "oci:/standin/escape":
    with open(os.path.join(output, name), "wb") as f:
        f.write(data)
record = {"path": name, "format": fmt, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
result = {"outputs": [record]}
event(event="build-end", status="ok", result=result)
if fmt == "ami":  # what an upload got: its flags, and its AWS environment as hashes (never a secret)
    aws = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in os.environ.items() if k.startswith("AWS_")}
    with open(os.path.join(state, "standin-aws.json"), "w") as f:
        json.dump({"argv": args[args.index("--progress=json") + 1:], "env": aws}, f)
    if ref == "oci:/standin/hang-upload":
        event(event="transfer", what="upload", done=0, total=len(data), sent=0, rate=0)
        time.sleep(120)
    region = args[args.index("--aws-region") + 1]
    upload = {"cloud": "aws", "region": region, "image_id": "ami-0standin", "snapshot_id": "snap-0"}
    result["uploads"] = [upload]
with open(os.path.join(output, "result.json"), "w") as f:
    json.dump(result, f)
"""


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(str(self.path))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_id(self) -> str:
        data = self.json()
        assert data["status"] is False, data
        return str(data["errors"][0]["id"])


class ComposerCli:
    """Requests as composer-cli (weldr-client) sends them: paths, methods, content types and bodies."""

    def __init__(self, socket_path: Path | None = None, tcp: tuple[str, int] | None = None, token: str = ""):
        self.socket_path, self.tcp, self.token = socket_path, tcp, token

    def raw(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Answer:
        if self.tcp is not None:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(*self.tcp, timeout=60)
        else:
            assert self.socket_path is not None
            conn = UnixConnection(self.socket_path)
        headers = {"User-Agent": "Go-http-client/1.1", "Accept-Encoding": "gzip"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def get(self, path: str) -> Answer:
        return self.raw("GET", path)

    def push(self, toml_text: str) -> Answer:  # composer-cli blueprints push
        return self.raw("POST", "/api/v1/blueprints/new", toml_text.encode(), "text/x-toml")

    def names(self) -> list[str]:  # composer-cli blueprints list
        total = self.get("/api/v1/blueprints/list?offset=0&limit=0").json()["total"]
        names: list[str] = self.get(f"/api/v1/blueprints/list?offset=0&limit={total}").json()["blueprints"]
        return names

    def start(self, name: str, compose_type: str, ref: str | None, size_mib: int = 0) -> Answer:
        body: dict[str, object] = {
            "blueprint_name": name,
            "compose_type": compose_type,
            "branch": "",
            "size": size_mib * 1024 * 1024,
        }
        if ref is not None:
            body["container_ref"] = ref
        return self.raw("POST", "/api/v1/compose", json.dumps(body).encode(), "application/json")

    def start_ok(self, name: str, compose_type: str, ref: str | None) -> str:
        answer = self.start(name, compose_type, ref)
        assert answer.status == 200, answer.body
        return str(answer.json()["build_id"])

    def info(self, compose_id: str) -> dict[str, Any]:
        info: dict[str, Any] = self.get(f"/api/v1/compose/info/{compose_id}").json()
        return info

    def wait(
        self, compose_id: str, timeout: float = 60.0, until: tuple[str, ...] = ("FINISHED", "FAILED")
    ) -> str:
        """composer-cli compose start --wait: poll compose/info until the status is one of `until`."""
        deadline = time.monotonic() + timeout
        while True:
            status = str(self.info(compose_id)["queue_status"])
            if status in until:
                return status
            assert time.monotonic() < deadline, f"compose {compose_id} still {status} after {timeout} s"
            time.sleep(0.1)

    def log(self, compose_id: str) -> str:
        return self.get(f"/api/v1/compose/log/{compose_id}?size=1024").body.decode()


def allowing(reference: str) -> tuple[str, ...]:
    """The test services' policy plus the directory of a local image (`oci-archive:/DIR/FILE`)."""
    transport, _, path = reference.partition(":")
    return (*TEST_ALLOWED_REFS, f"{transport}:{Path(path).parent}/*")


def short_tempdir() -> str:
    """A directory for a Unix socket: pytest's tmp_path can exceed the 108-byte sun_path limit."""
    return tempfile.mkdtemp(prefix="imgbuild-svc-", dir="/tmp")


def standin_builder(directory: Path) -> tuple[str, ...]:
    script = directory / "standin_builder.py"
    script.write_text(STANDIN_BUILDER)
    return (sys.executable, str(script))


@contextmanager
def running_service(
    state: Path,
    *,
    builder: tuple[str, ...] = REAL_BUILDER,
    workers: int = 1,
    token: str | None = None,
    grace: float = 3.0,
    max_body: int = 4 * 1024 * 1024,
    default_ref: str | None = None,
    allow_refs: tuple[str, ...] = TEST_ALLOWED_REFS,
    worker_token: str | None = None,
    port: int = 0,
    heartbeat_timeout: float = 60.0,
    object_store: str | None = None,
    object_part_size: int = 64 * 1024 * 1024,
) -> Iterator[tuple[Service, ComposerCli]]:
    """A service on a Unix socket in a temporary directory (and 127.0.0.1 when `token` is given),
    always stopped and its socket removed. `allow_refs`: its reference policy (serve --allow-ref)."""
    import shutil

    sockdir = Path(short_tempdir())
    config = ServiceConfig(
        state_dir=state,
        socket_path=sockdir / "api.socket",
        listen=("127.0.0.1", port) if token else None,
        token=token,
        workers=workers,
        builder_command=builder,
        grace=grace,
        max_body=max_body,
        default_ref=default_ref,
        allow_refs=allow_refs,
        database=DATABASE.url,
        worker_token=worker_token,
        heartbeat_timeout=heartbeat_timeout,
        object_store=object_store,
        object_part_size=object_part_size,
    )
    try:
        with Service(config) as service:
            yield service, ComposerCli(sockdir / "api.socket")
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


BLUEPRINT = (
    'name = "{name}"\ndescription = "a test"\nversion = "{version}"\n\n[customizations]\nhostname = "h1"\n'
)


def blueprint(name: str = "demo", version: str = "1.0.0") -> str:
    return BLUEPRINT.format(name=name, version=version)


EXAMPLE_BLUEPRINT = """name = "example"
description = "the example OS, through the service"
version = "0.1.0"

[customizations]
hostname = "from-the-service"
"""


def log_tail(cli: ComposerCli, compose_id: str) -> str:
    return "\n".join(cli.log(compose_id).splitlines()[-30:])
