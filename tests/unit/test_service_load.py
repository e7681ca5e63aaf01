"""Many clients at once, restarts with composes waiting, and a service killed while a compose runs."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from builder import run
from builder.service.queue import LOG_NAME, STOPPED_REASON
from builder.service.store import ComposeStatus
from tests.unit.test_service_support import (
    DATABASE,
    MISSING_IMAGE_REF,
    ComposerCli,
    blueprint,
    open_store,
    running_service,
    short_tempdir,
    standin_builder,
)

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL
ROOT = Path(__file__).resolve().parents[2]


def _running_lines(state: Path, compose_id: str) -> int:
    log = (state / "composes" / compose_id / LOG_NAME).read_text()
    return sum(1 for line in log.splitlines() if line.startswith("imgbuild-service:") and " running " in line)


def test_concurrent_pushes_and_composes_survive_a_restart(tmp_path: Path) -> None:
    """50 concurrent pushes, 20 concurrent compose starts with the real builder (failing fast on a missing
    image) against two workers, a restart while composes wait: none lost, none run twice."""
    state = tmp_path / "state"
    with running_service(state, workers=2) as (_, cli):
        with ThreadPoolExecutor(max_workers=50) as pool:
            pushes = list(pool.map(lambda n: cli.push(f'name = "bp{n % 10}"\n'), range(50)))
        assert all(answer.json() == {"status": True} for answer in pushes)
        assert cli.names() == [f"bp{n}" for n in range(10)]
        for n in range(10):  # five pushes without a version, serialised: 0.0.0, then four patch bumps
            changes = cli.get(f"/api/v1/blueprints/changes/bp{n}").json()["blueprints"][0]["changes"]
            expected = [f"Recipe bp{n}, version 0.0.{v} saved." for v in range(4, -1, -1)]
            assert [c["message"] for c in changes] == expected

        with ThreadPoolExecutor(max_workers=20) as pool:
            ids = list(pool.map(lambda n: cli.start_ok(f"bp{n % 10}", "qcow2", MISSING_IMAGE_REF), range(20)))
        assert len(set(ids)) == 20
    # stopped at once: some composes ran, the rest still wait
    store = open_store(state)
    waiting = {c.id for c in store.composes(ComposeStatus.WAITING)}
    assert waiting, "the restart should find composes waiting"
    assert all(c.runs == 0 for c in store.composes(ComposeStatus.WAITING))
    store.close_thread_connection()

    with running_service(state, workers=2) as (service, cli):
        for compose_id in ids:
            assert cli.wait(compose_id, timeout=120) == "FAILED"
        entries = cli.get("/api/v1/compose/status/*").json()["uuids"]
        assert sorted(e["id"] for e in entries) == sorted(ids)
        for compose_id in ids:
            compose = service.store.compose(compose_id)
            assert compose is not None and compose.reason
            assert compose.runs <= 1
            if compose_id in waiting:
                assert compose.runs == 1 and "missing-image.ociarchive" in compose.reason
            assert _running_lines(state, compose_id) == compose.runs
            if compose.runs == 0:
                assert compose.reason == "canceled by request" or compose.reason == STOPPED_REASON


DRIVER = """
import signal, sys, threading
from pathlib import Path
from builder.service.server import Service, ServiceConfig
from sqlalchemy.engine import make_url
database = None if sys.argv[3] == "sqlite" else make_url(sys.argv[3])
config = ServiceConfig(state_dir=Path(sys.argv[1]), socket_path=Path(sys.argv[2]),
                       builder_command=tuple(sys.argv[4:]), workers=1, grace=2.0,
                       allow_refs=("oci:/standin/*",), database=database)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *args: stop.set())
with Service(config):
    print("ready", flush=True)
    stop.wait()
"""


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def test_a_killed_service_fails_the_running_compose_and_stops_its_builder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    socket_path = Path(short_tempdir()) / "api.socket"
    database = "sqlite" if DATABASE.url is None else DATABASE.url.render_as_string(hide_password=False)
    argv = [sys.executable, "-c", DRIVER, str(state), str(socket_path), database, *standin_builder(tmp_path)]
    cli = ComposerCli(socket_path)
    env = {"PYTHONPATH": str(ROOT)}
    with run.spawn(argv, env=env, stderr=run.DEVNULL, check=False) as first:
        assert first.stdout is not None and first.stdout.readline() == b"ready\n"
        cli.push(blueprint())
        hung = cli.start_ok("demo", "qcow2", "oci:/standin/hang")
        queued = [cli.start_ok("demo", "raw", "oci:/standin/ok") for _ in range(2)]
        cli.wait(hung, until=("RUNNING",))
        deadline = time.monotonic() + 30
        while "started pid=" not in cli.log(hung):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        builder_pid = int(cli.log(hung).split("started pid=")[1].split()[0])
        first.kill()  # no cleanup at all: as if the machine's OOM killer struck
    assert _alive(builder_pid)  # its own session: it outlived the service

    with run.spawn(argv, env=env, stderr=run.DEVNULL, check=False) as second:
        assert second.stdout is not None and second.stdout.readline() == b"ready\n"
        try:
            assert cli.info(hung)["queue_status"] == "FAILED"
            assert cli.info(hung)["reason"] == STOPPED_REASON
            assert STOPPED_REASON in cli.log(hung)
            for compose_id in queued:
                assert cli.wait(compose_id) == "FINISHED"
            assert not _alive(builder_pid)
        finally:
            second.terminate()
    assert second.returncode == 0
    assert not socket_path.exists()
    runs = (state / "standin-runs.log").read_text().split()
    assert sorted(runs) == sorted([hung, *queued])
    socket_path.parent.rmdir()
