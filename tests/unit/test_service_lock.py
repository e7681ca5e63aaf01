"""One service per state directory: a second one (in this process or as `imgbuild serve`) stops with the
holder's pid and exit 2 before it touches anything, and the first one's composes go on; a start that
fails leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from builder import run
from builder.service.server import Service, ServiceConfig
from builder.service.statelock import StateInUse
from tests.unit.composer_cli import Commands
from tests.unit.test_service_support import blueprint, running_service, short_tempdir, standin_builder

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL


def _files(state: Path) -> list[str]:
    """The state directory's files; SQLite's -wal and -shm come and go with the first service's own
    connections."""
    return sorted(p.name for p in state.iterdir() if not p.name.endswith(("-wal", "-shm")))


def test_a_second_service_on_the_same_state_stops_and_leaves_the_first_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_service(state, builder=standin_builder(tmp_path)) as (service, cli):
        cc = Commands(cli)
        cc.push(blueprint())
        running = cc.start_ostree("demo", "qcow2", url="oci:/standin/hang")["build_id"]
        cli.wait(running, until=("RUNNING",))
        deadline = time.monotonic() + 30
        while "started pid=" not in cli.log(running):  # the stand-in has written what it writes
            assert time.monotonic() < deadline
            time.sleep(0.05)
        waiting = cc.start_ostree("demo", "qcow2", url="oci:/standin/ok")["build_id"]
        before = _files(state)

        sockdir = Path(short_tempdir())
        try:
            second = Service(ServiceConfig(state_dir=state, socket_path=sockdir / "b.socket"))
            with pytest.raises(
                StateInUse, match=f"in use by another imgbuild service \\(pid {os.getpid()}\\)"
            ):
                second.start()
            assert list(sockdir.iterdir()) == []  # it bound nothing

            result = run.run(
                [
                    sys.executable,
                    "-m",
                    "builder",
                    "serve",
                    "--socket",
                    f"{sockdir}/c.socket",
                    "--state",
                    str(state),
                ],
                check=False,
                timeout=60,
            )
            assert result.returncode == 2
            stderr = result.stderr.decode()
            assert f"pid {os.getpid()}" in stderr and "Traceback" not in stderr
            assert len(stderr.strip().splitlines()) <= 2  # the error and its hint
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)

        assert _files(state) == before
        assert (state / "service.lock").read_text() == f"{os.getpid()}\n"
        assert cli.info(running)["queue_status"] == "RUNNING"  # not marked failed by a second recovery
        assert cli.info(waiting)["queue_status"] == "WAITING"
        assert cc.cancel(running)["status"] is True
        assert cli.wait(waiting) == "FINISHED"
        assert "reason" not in service.store.compose(waiting).entry()  # type: ignore[union-attr]
    # the lock went with the first service: the next start works
    with running_service(state) as (_, cli):
        assert cli.get("/api/status").status == 200


def test_a_failed_start_creates_nothing(tmp_path: Path) -> None:
    sockdir = Path(short_tempdir())
    try:
        not_a_socket = sockdir / "file"
        not_a_socket.write_text("")
        state = tmp_path / "new" / "state"
        with pytest.raises(Exception, match="not a socket"):
            Service(ServiceConfig(state_dir=state, socket_path=not_a_socket)).start()
        assert not (tmp_path / "new").exists()

        existing = tmp_path / "existing"
        existing.mkdir()
        with pytest.raises(Exception, match="not a socket"):
            Service(ServiceConfig(state_dir=existing, socket_path=not_a_socket)).start()
        assert list(existing.iterdir()) == []

        deep_socket = sockdir / "a" / "b" / "api.socket"
        with pytest.raises(Exception, match="no group"):
            Service(ServiceConfig(state_dir=state, socket_path=deep_socket, group="no-such-group")).start()
        assert not (tmp_path / "new").exists() and not (sockdir / "a").exists()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
