"""The Weldr API as composer-cli uses it: blueprints, composes through to the image, errors, hostile input."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from builder.service.queue import STOPPED_REASON
from tests.unit.test_service_support import (
    MISSING_IMAGE_REF,
    blueprint,
    running_service,
    standin_builder,
)

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL


def _members(tar_bytes: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        files = {member.name: tar.extractfile(member) for member in tar.getmembers()}
        return {name: f.read() for name, f in files.items() if f is not None}


def test_status_and_compose_types(tmp_path: Path) -> None:
    with running_service(tmp_path / "state") as (_, cli):
        status = cli.get("/api/status").json()
        assert status["api"] == "1" and status["db_supported"] is True and status["msgs"] == []
        types = cli.get("/api/v1/compose/types").json()["types"]
        assert {"name": "qcow2", "enabled": True} in types and {"name": "raw", "enabled": True} in types


def test_push_start_wait_download(tmp_path: Path) -> None:
    """The composer-cli flow: push, compose start, wait, image/logs/metadata/results, delete."""
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path)) as (_, cli):
        assert cli.push(blueprint()).json() == {"status": True}
        assert cli.names() == ["demo"]
        shown = cli.get("/api/v1/blueprints/info/demo?format=toml")
        assert shown.headers["Content-Type"] == "text/x-toml"
        assert 'version = "1.0.0"' in shown.body.decode() and 'hostname = "h1"' in shown.body.decode()

        reply = cli.start("demo", "qcow2", "oci:/standin/ok", size_mib=2048).json()
        assert reply["status"] is True and reply["warnings"] == []
        compose_id = reply["build_id"]
        assert str(uuid.UUID(compose_id)) == compose_id
        assert cli.wait(compose_id) == "FINISHED"
        info = cli.info(compose_id)
        assert info["blueprint"]["name"] == "demo" and info["compose_type"] == "qcow2"
        assert info["image_size"] == 2048 * 1024 * 1024 and info["container_ref"] == "oci:/standin/ok"

        image = cli.get(f"/api/v1/compose/image/{compose_id}")
        assert image.status == 200
        assert image.headers["Content-Disposition"] == f"attachment; filename={compose_id}-disk.qcow2"
        assert image.headers["Content-Type"] == "application/x-qemu-disk"
        assert int(image.headers["Content-Length"]) == len(image.body) == 22000
        assert image.body.startswith(b"qcow2:oci:/standin/ok\n")
        # the builder got the size (in bytes) and the committed blueprint
        log = cli.log(compose_id)
        assert f"--size {2048 * 1024 * 1024}B" in log and "--progress=json" in log
        assert "compose FINISHED" in log

        logs = _members(cli.get(f"/api/v1/compose/logs/{compose_id}").body)
        assert b"build-end" in logs["logs/osbuild.log"]
        meta = _members(cli.get(f"/api/v1/compose/metadata/{compose_id}").body)
        assert json.loads(meta[f"{compose_id}.json"])["outputs"][0]["path"] == "disk.qcow2"
        results = cli.get(f"/api/v1/compose/results/{compose_id}")
        assert results.headers["Transfer-Encoding"] == "chunked"
        everything = _members(results.body)
        assert {"logs/osbuild.log", "blueprint.toml", f"{compose_id}.json"} < set(everything)
        assert everything[f"{compose_id}-disk.qcow2"] == image.body

        finished = cli.get("/api/v1/compose/finished").json()["finished"]
        assert [entry["id"] for entry in finished] == [compose_id]
        assert finished[0]["queue_status"] == "FINISHED" and finished[0]["version"] == "1.0.0"
        assert {"job_created", "job_started", "job_finished"} <= set(finished[0])
        deleted = cli.raw("DELETE", f"/api/v1/compose/delete/{compose_id}").json()
        assert deleted == {"uuids": [{"uuid": compose_id, "status": True}], "errors": []}
        assert not (tmp_path / "state" / "composes" / compose_id).exists()
        assert cli.get(f"/api/v1/compose/info/{compose_id}").error_id() == "UnknownUUID"


def test_real_builder_failure_is_reported(tmp_path: Path) -> None:
    """A compose running the real builder on a missing image: FAILED, with the builder's error as reason."""
    with running_service(tmp_path / "state") as (_, cli):
        cli.push(blueprint())
        compose_id = cli.start_ok("demo", "raw", MISSING_IMAGE_REF)
        assert cli.wait(compose_id, timeout=60) == "FAILED"
        info = cli.info(compose_id)
        assert "missing-image.ociarchive" in info["reason"], info["reason"]
        log = cli.log(compose_id)
        assert "-m builder raw " + MISSING_IMAGE_REF in log and "imgbuild: error:" in log
        failed = cli.get("/api/v1/compose/failed").json()["failed"]
        assert [entry["id"] for entry in failed] == [compose_id]
        assert cli.get(f"/api/v1/compose/image/{compose_id}").error_id() == "BuildInWrongState"
        # logs and metadata are there for failed composes too
        assert cli.get(f"/api/v1/compose/logs/{compose_id}").status == 200


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("oci:/standin/fail", "the stand-in was asked to fail"),
        ("oci:/standin/escape", "not a file in its output"),
    ],
)
def test_failures_and_unsafe_results(tmp_path: Path, ref: str, reason: str) -> None:
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path)) as (_, cli):
        cli.push(blueprint())
        compose_id = cli.start_ok("demo", "qcow2", ref)
        assert cli.wait(compose_id) == "FAILED"
        assert reason in cli.info(compose_id)["reason"]


def test_cancel_running_and_waiting(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path), grace=5) as (_, cli):
        cli.push(blueprint())
        running = cli.start_ok("demo", "qcow2", "oci:/standin/hang")
        waiting = cli.start_ok("demo", "qcow2", "oci:/standin/ok")
        assert cli.wait(running, until=("RUNNING",)) == "RUNNING"
        waiting_log = cli.get(f"/api/v1/compose/log/{waiting}")
        assert waiting_log.status == 200 and waiting_log.error_id() == "BuildInWrongState"
        queue = cli.get("/api/v1/compose/queue").json()
        assert [e["id"] for e in queue["run"]] == [running] and [e["id"] for e in queue["new"]] == [waiting]
        for _ in range(100):  # the builder has started once its first line is in the log
            if "started pid=" in cli.log(running):
                break
            import time

            time.sleep(0.05)
        pid = int(cli.log(running).split("started pid=")[1].split()[0])

        assert cli.raw("DELETE", f"/api/v1/compose/cancel/{waiting}").json() == {
            "uuid": waiting,
            "status": True,
        }
        assert cli.info(waiting)["queue_status"] == "FAILED"
        assert cli.raw("DELETE", f"/api/v1/compose/cancel/{running}").json()["status"] is True
        assert cli.info(running)["queue_status"] == "FAILED"
        assert cli.info(running)["reason"] == "canceled by request"
        assert "stopping on SIGTERM" in cli.log(running)
        assert not Path(f"/proc/{pid}").exists()
        again = cli.raw("DELETE", f"/api/v1/compose/cancel/{running}")
        assert again.status == 400 and again.error_id() == "BuildInWrongState"
        # a running compose cannot be deleted, an ended one can
        assert not (tmp_path / "state" / "composes" / running / "output" / "disk.qcow2").exists()
        runs = (tmp_path / "state" / "standin-runs.log").read_text().split()
        assert runs == [running]  # the canceled waiting compose never ran


def test_log_follows_a_running_compose(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path)) as (_, cli):
        cli.push(blueprint())
        compose_id = cli.start_ok("demo", "raw", "oci:/standin/slow")
        cli.wait(compose_id, until=("RUNNING", "FINISHED"))
        offset, seen = 0, b""
        while True:
            answer = cli.get(f"/api/v1/compose/log/{compose_id}?offset={offset}")
            assert answer.headers["Content-Type"].startswith("text/plain")
            seen += answer.body
            offset += len(answer.body)
            assert int(answer.headers["X-Log-Size"]) >= offset
            if not answer.body and cli.info(compose_id)["queue_status"] == "FINISHED":
                break
        seen += cli.get(f"/api/v1/compose/log/{compose_id}?offset={offset}").body
        text = seen.decode()
        assert all(f"step {n}" in text for n in range(10)) and text.rstrip().endswith("compose FINISHED")
        tail = cli.get(f"/api/v1/compose/log/{compose_id}?size=0").body
        assert tail == b""


def test_stop_fails_running_and_keeps_waiting(tmp_path: Path) -> None:
    """A graceful stop: the running compose FAILED (with the reason), waiting ones run after the restart."""
    state = tmp_path / "state"
    builder = standin_builder(tmp_path)
    with running_service(state, builder=builder) as (_, cli):
        cli.push(blueprint())
        running = cli.start_ok("demo", "qcow2", "oci:/standin/hang")
        waiting = [cli.start_ok("demo", "qcow2", "oci:/standin/ok") for _ in range(3)]
        cli.wait(running, until=("RUNNING",))
    with running_service(state, builder=builder, workers=2) as (_, cli):
        assert cli.info(running)["queue_status"] == "FAILED"
        assert cli.info(running)["reason"] == STOPPED_REASON
        for compose_id in waiting:
            assert cli.wait(compose_id) == "FINISHED"
        assert cli.names() == ["demo"]  # blueprints survive the restart too
    runs = (state / "standin-runs.log").read_text().split()
    assert sorted(runs) == sorted([running, *waiting])


def test_plain_composer_cli_start_uses_the_default_ref(tmp_path: Path) -> None:
    """`composer-cli compose start NAME qcow2` sends no container: `serve --default-ref` supplies it."""
    with running_service(
        tmp_path / "state", builder=standin_builder(tmp_path), default_ref="oci:/standin/ok"
    ) as (
        _,
        cli,
    ):
        cli.push(blueprint())
        compose_id = cli.start_ok("demo", "qcow2", None)
        assert cli.wait(compose_id) == "FINISHED"
        assert cli.info(compose_id)["container_ref"] == "oci:/standin/ok"
        assert cli.get(f"/api/v1/compose/image/{compose_id}").status == 200
