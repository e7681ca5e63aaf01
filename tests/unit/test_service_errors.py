"""Errors in Weldr's shape, hostile paths and bodies, the body limit, and the TCP token."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.service.server import Service, ServiceConfig
from tests.unit.test_service_support import ComposerCli, blueprint, running_service

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL

BAD_NAMES = ["..", "%2e%2e", "..%2f..%2fetc", "a%00b", "a%20b", "a;b", "%c3%a9", "%252e%252e", "a%0ab"]


def test_unknown_routes_and_methods(tmp_path: Path) -> None:
    with running_service(tmp_path / "state") as (_, cli):
        for path in (
            "/api/v1/nothing",
            "/api/v1/blueprints/info",
            "/api/v1/compose/bogus/x",
            "/x",
            "/api/v3/compose",
        ):
            answer = cli.get(path)
            assert answer.status == 404, path
            assert answer.json() == {
                "status": False,
                "errors": [{"id": "HTTPError", "msg": "Not Found", "code": 404}],
            }
        for method, path in (
            ("GET", "/api/v1/blueprints/new"),
            ("POST", "/api/v1/blueprints/list"),
            ("GET", "/api/v1/compose"),
            ("DELETE", "/api/v1/blueprints/workspace"),
            ("PUT", "/api/v1/compose/queue"),
            ("POST", "/api/status"),
        ):
            answer = cli.raw(method, path)
            assert answer.status == 405 and answer.body == b"", (method, path)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_hostile_names_and_uuids_are_refused(tmp_path: Path, name: str) -> None:
    with running_service(tmp_path / "state") as (_, cli):
        cli.push(blueprint())
        for method, path in (
            ("GET", f"/api/v1/blueprints/info/{name}"),
            ("GET", f"/api/v1/blueprints/info/demo,{name}"),
            ("DELETE", f"/api/v1/blueprints/delete/{name}"),
            ("GET", f"/api/v1/blueprints/changes/{name}"),
            ("POST", f"/api/v1/blueprints/tag/{name}"),
            ("GET", f"/api/v1/compose/info/{name}"),
            ("GET", f"/api/v1/compose/image/{name}"),
            ("DELETE", f"/api/v1/compose/delete/{name}"),
            ("GET", f"/api/v1/compose/log/{name}"),
        ):
            answer = cli.raw(method, path)
            assert answer.status in (400, 404), (method, path, answer.status)
            if answer.status == 400:
                assert answer.json()["errors"] == [
                    {"id": "InvalidChars", "msg": "Invalid characters in API path"}
                ]
        assert cli.names() == ["demo"]
        pushed = cli.push(f'name = "{name}"\n')
        assert pushed.status == 400 and pushed.error_id() in ("InvalidChars", "BlueprintsError")
        started = cli.start(name, "qcow2", "registry.invalid/os:1")
        assert started.status == 400 and started.error_id() == "InvalidChars"


def test_uuids_must_be_real(tmp_path: Path) -> None:
    with running_service(tmp_path / "state") as (_, cli):
        for text in ("abc", "12345678-1234-1234-1234-1234567890123", "*"):
            answer = cli.get(f"/api/v1/compose/info/{text}")
            assert answer.status == 400 and answer.error_id() in ("UnknownUUID", "InvalidChars"), text
        unknown = "0b6a4d9e-95a2-4f3c-9a57-2ef1c5b1e8a4"
        assert cli.get(f"/api/v1/compose/info/{unknown}").error_id() == "UnknownUUID"
        assert cli.raw("DELETE", f"/api/v1/compose/cancel/{unknown}").error_id() == "UnknownUUID"
        deleted = cli.raw("DELETE", f"/api/v1/compose/delete/{unknown}").json()
        assert deleted["uuids"] == [] and deleted["errors"][0]["id"] == "UnknownUUID"
        assert cli.get("/api/v1/compose/status/*").json() == {"uuids": []}


def test_malformed_bodies_get_weldr_errors(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", max_body=64 * 1024) as (_, cli):
        cases = [
            (b'name = "x"\nname = "y"\n', "text/x-toml"),  # duplicate key
            (b"name = ", "text/x-toml"),
            (b"[[[", "text/x-toml"),
            (b"\xff\xfe\x00", "text/x-toml"),
            (b'{"name": ', "application/json"),
            (b"[1, 2]", "application/json"),
            (b'{"name": 5}', "application/json"),
            (b'{"name": "x", "version": "one"}', "application/json"),
            (b'{"name": "x", "version": 1}', "application/json"),
            (b'name = "x"\n[customizations]\nhostname = 5\n', "text/x-toml"),  # the blueprint schema says no
            (b'name = "x"\nwhen = 1979-05-27\n', "text/x-toml"),
            (b'name = "x"', "text/plain"),
            (b'name = "x"', None),
            (b"", "text/x-toml"),
        ]
        for body, content_type in cases:
            for route in ("new", "workspace"):
                answer = cli.raw("POST", f"/api/v1/blueprints/{route}", body, content_type)
                assert answer.status == 400, (body, content_type, answer.body)
                assert answer.error_id() in ("BlueprintsError", "InvalidChars"), answer.body
                assert b"Traceback" not in answer.body
        huge = b'name = "x"\ndescription = "' + b"a" * (128 * 1024) + b'"\n'
        answer = cli.raw("POST", "/api/v1/blueprints/new", huge, "text/x-toml")
        assert answer.status == 400 and "too large" in answer.json()["errors"][0]["msg"]
        assert cli.names() == []

        cli.push(blueprint())
        compose_cases = [
            (b'{"blueprint_name": "demo"', "application/json", "ComposeError"),
            (b"[]", "application/json", "ComposeError"),
            (b'{"blueprint_name": "demo", "compose_type": "qcow2"}', "text/x-toml", "MissingPost"),
            (
                b'{"blueprint_name": "demo", "compose_type": "iso", "container_ref": "a/b"}',
                "application/json",
                "ComposeError",
            ),
            (b'{"blueprint_name": "demo", "compose_type": "qcow2"}', "application/json", "ComposeError"),
            (
                b'{"blueprint_name": "demo", "compose_type": "qcow2", "container_ref": "-rf"}',
                "application/json",
                "ComposeError",
            ),
            (
                b'{"blueprint_name": "demo", "compose_type": "qcow2", "container_ref": "a b"}',
                "application/json",
                "ComposeError",
            ),
            (
                b'{"blueprint_name": "demo", "compose_type": "qcow2", "container_ref": "a", "size": -1}',
                "application/json",
                "ComposeError",
            ),
            (
                b'{"blueprint_name": "demo", "compose_type": "qcow2", "container_ref": ["a"]}',
                "application/json",
                "ComposeError",
            ),
            (
                b'{"blueprint_name": 7, "compose_type": "qcow2", "container_ref": "a"}',
                "application/json",
                "InvalidChars",
            ),
            (
                b'{"blueprint_name": "../demo", "compose_type": "qcow2", "container_ref": "a"}',
                "application/json",
                "InvalidChars",
            ),
        ]
        for body, content_type, error_id in compose_cases:
            answer = cli.raw("POST", "/api/v1/compose", body, content_type)
            assert answer.status == 400 and answer.error_id() == error_id, (body, answer.body)
        assert cli.get("/api/v1/compose/status/*").json() == {"uuids": []}
        # the bootc form of the reference is accepted, as is Image Builder's fake-compose switch
        request = {
            "blueprint_name": "demo",
            "compose_type": "raw",
            "bootc": {"reference": "registry.invalid/os:1"},
        }
        answer = cli.raw("POST", "/api/v1/compose?test=2", json.dumps(request).encode(), "application/json")
        compose_id = answer.json()["build_id"]
        assert cli.info(compose_id)["queue_status"] == "FINISHED"
        assert cli.info(compose_id)["container_ref"] == "registry.invalid/os:1"


def test_oversized_body_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A client announcing 1 GiB gets its answer at once; the service does not wait for the bytes."""
    with running_service(tmp_path / "state") as (service, _):
        assert service.config.socket_path is not None
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(service.config.socket_path))
            sock.sendall(
                b"POST /api/v1/blueprints/new HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/x-toml\r\n"
                b"Content-Length: 1073741824\r\n\r\nname = "
            )
            chunks = []
            while chunk := sock.recv(65536):  # the service closes the connection after its answer
                chunks.append(chunk)
            reply = b"".join(chunks).decode()
        assert reply.startswith("HTTP/1.1 400") and "too large" in reply and "Connection: close" in reply


ROUTES = [
    ("GET", "/api/status"),
    ("GET", "/api/v1/blueprints/list"),
    ("GET", "/api/v1/blueprints/info/demo"),
    ("POST", "/api/v1/blueprints/new"),
    ("POST", "/api/v1/blueprints/workspace"),
    ("DELETE", "/api/v1/blueprints/workspace/demo"),
    ("DELETE", "/api/v1/blueprints/delete/demo"),
    ("GET", "/api/v1/blueprints/changes/demo"),
    ("GET", "/api/v1/blueprints/freeze/demo"),
    ("GET", "/api/v1/blueprints/diff/demo/NEWEST/WORKSPACE"),
    ("POST", "/api/v1/blueprints/tag/demo"),
    ("GET", "/api/v1/compose/types"),
    ("POST", "/api/v1/compose"),
    ("GET", "/api/v1/compose/queue"),
    ("GET", "/api/v1/compose/finished"),
    ("GET", "/api/v1/compose/failed"),
    ("GET", "/api/v1/compose/status/*"),
    ("GET", "/api/v1/compose/info/{id}"),
    ("GET", "/api/v1/compose/log/{id}"),
    ("GET", "/api/v1/compose/logs/{id}"),
    ("GET", "/api/v1/compose/image/{id}"),
    ("DELETE", "/api/v1/compose/cancel/{id}"),
    ("DELETE", "/api/v1/compose/delete/{id}"),
    ("GET", "/api/v1/nothing"),
]


def test_tcp_needs_the_token(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", token="s3cret-token") as (service, local):
        local.push(blueprint())
        compose_id = local.raw(
            "POST",
            "/api/v1/compose?test=2",
            b'{"blueprint_name": "demo", "compose_type": "qcow2", "container_ref": "registry.invalid/os:1"}',
            "application/json",
        ).json()["build_id"]
        before = (
            local.get("/api/v1/blueprints/changes/demo").body,
            local.get("/api/v1/compose/status/*").body,
        )
        for token in ("", "wrong", "s3cret-token-but-longer", "S3CRET-TOKEN"):
            remote = ComposerCli(tcp=service.tcp_address, token=token)
            for method, path in ROUTES:
                body = blueprint().encode() if method == "POST" else None
                answer = remote.raw(method, path.format(id=compose_id), body, "text/x-toml" if body else None)
                assert answer.status == 401, (token, method, path)
                assert answer.error_id() == "Unauthorized" and "WWW-Authenticate" in answer.headers
        after = (
            local.get("/api/v1/blueprints/changes/demo").body,
            local.get("/api/v1/compose/status/*").body,
        )
        assert before == after  # nothing was done
        assert local.get(f"/api/v1/compose/info/{compose_id}").status == 200
        remote = ComposerCli(tcp=service.tcp_address, token="s3cret-token")
        assert remote.get("/api/status").status == 200
        assert remote.names() == ["demo"]
        assert service.tcp_address[0] == "127.0.0.1"


def test_tcp_without_token_is_refused(tmp_path: Path) -> None:
    config = ServiceConfig(state_dir=tmp_path / "state", socket_path=None, listen=("127.0.0.1", 0))
    with pytest.raises(ImgbuildError, match="token"):
        Service(config)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"FOO /api/status HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"this is not http\r\n\r\n", 0),  # taken as HTTP/0.9, which has no status line
        (b"GET /api/status HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
)
def test_protocol_errors_are_weldr_shaped(tmp_path: Path, request_bytes: bytes, status: int) -> None:
    with running_service(tmp_path / "state") as (service, _):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(service.config.socket_path))
            sock.sendall(request_bytes)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        data = b"".join(chunks)
        head, _, body = data.partition(b"\r\n\r\n") if status else (b"", b"", data)
        assert not status or head.split()[1] == str(status).encode(), head
        assert json.loads(body)["errors"][0]["id"] == "HTTPError"
