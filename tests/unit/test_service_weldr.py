"""The service's pure parts and its store: names, UUIDs, versions, routing, failure reasons, atomic claims."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.service.queue import failure_reason, find_image
from builder.service.server import route, split_path
from builder.service.store import ComposeStatus
from builder.service.weldr import WeldrError, bump_patch, check_name, check_uuid, next_version
from tests.unit.test_service_support import open_store

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL


@pytest.mark.parametrize("name", ["demo", "a.b-c_d", "V1.2"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "a\x00b", "é", "a\nb", "a%2e"])
def test_bad_names(name: str) -> None:
    with pytest.raises(WeldrError) as e:
        check_name(name)
    assert e.value.id == "InvalidChars" and e.value.msg == "Invalid characters in API path"


def test_uuids() -> None:
    text = str(uuid.uuid4())
    assert check_uuid(text) == text
    assert check_uuid(text.upper()) == text
    for bad in ("abc", text + "0", text.replace("-", ""), "{" + text + "}"):
        with pytest.raises(WeldrError):
            check_uuid(bad)


def test_versions() -> None:
    assert next_version("", None) == "0.0.0"
    assert next_version("1.2.3", None) == "1.2.3"
    assert next_version("", "1.2.3") == "1.2.4"
    assert next_version("1.2.3", "1.2.3") == "1.2.4"
    assert next_version("2.0.0", "1.2.3") == "2.0.0"
    assert bump_patch("1.2.3-rc.1") == "1.2.4"


def test_paths_and_routes() -> None:
    segments, query = split_path("/api/v1/blueprints/info/a,b?format=toml")
    assert segments == ["", "api", "v1", "blueprints", "info", "a,b"] and query == {"format": ["toml"]}
    for bad in (
        "/api/v1/blueprints/info/%2e%2e",
        "/api/v1/x/../y",
        "/api/v1/%00",
        "/api/v1/%ff",
        "/api/v1/a%2fb%20",
    ):
        with pytest.raises(WeldrError) as e:
            split_path(bad)
        assert e.value.id == "InvalidChars"
    found = route("GET", ["", "api", "v0", "compose", "status", "*"])
    assert found is not None and found[1] == ("*",)
    assert route("GET", ["", "api", "v1", "compose"]) is None  # POST only: 405
    for segments in (["", "api", "v2", "compose", "queue"], ["", "api", "v1", "compose", "", "queue"]):
        with pytest.raises(WeldrError) as e:
            route("GET", segments)
        assert e.value.http_status == 404


def test_failure_reason(tmp_path: Path) -> None:
    log = tmp_path / "compose.log"
    log.write_text(
        "imgbuild-service: 2026 running x\n"
        + json.dumps({"event": "stage-start", "stage": "disk"})
        + "\nimgbuild: error: no space left\nhint: free some\nimgbuild-service: 2026 compose FAILED\n"
    )
    assert failure_reason(log) == "no space left"
    log.write_text(
        json.dumps({"event": "build-end", "status": "failed", "error": "stage disk failed"}) + "\n"
    )
    assert failure_reason(log) == "stage disk failed"
    log.write_text("Traceback...\nValueError: boom\n")
    assert failure_reason(log) == "ValueError: boom"
    assert failure_reason(tmp_path / "missing") == ""


def test_find_image_stays_in_the_output(tmp_path: Path) -> None:
    out = tmp_path / "output"
    out.mkdir()
    (out / "disk.raw").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"s")
    (out / "link.raw").symlink_to(tmp_path / "secret")
    for path, ok in (
        ("disk.raw", True),
        (str(out / "disk.raw"), True),
        ("../secret", False),
        ("link.raw", False),
        ("/etc/passwd", False),
        ("nothing.raw", False),
    ):
        (out / "result.json").write_text(json.dumps({"outputs": [{"path": path}]}))
        if ok:
            assert find_image(out) == "disk.raw"
        else:
            with pytest.raises(ImgbuildError):
                find_image(out)
    (out / "result.json").write_text("{")
    with pytest.raises(ImgbuildError):
        find_image(out)


def test_claims_are_atomic(tmp_path: Path) -> None:
    """Eight threads, each with its own connection, claim 200 composes: each is claimed exactly once."""
    store = open_store(tmp_path)
    ids = [str(uuid.uuid4()) for _ in range(200)]
    for compose_id in ids:
        store.add_compose(compose_id, {"name": "demo", "version": "1.0.0"}, "raw", "registry.invalid/os:1", 0)
    claimed: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        while (compose := store.claim_next()) is not None:
            with lock:
                claimed.append(compose.id)
            store.finish(compose.id, ComposeStatus.FINISHED, None, None)
        store.close_thread_connection()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)
    assert all(c.runs == 1 and c.status is ComposeStatus.FINISHED for c in store.composes())
    assert not store.finish(ids[0], ComposeStatus.FAILED, "late", None)  # only a RUNNING compose ends
