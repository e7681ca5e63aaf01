"""Remote workers (`imgbuild worker`) against a service with no local workers, with the stand-in builder:
tokens both ways, routing by label, a worker killed outright (its compose requeued once, then failed), a
cancel that reaches the worker, a service restart in the middle of a build, `imgbuild workers`.
With SQLite and with PostgreSQL (the service_database fixture)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from builder import run
from builder.service.client import WeldrClient
from builder.service.store import ComposeStatus
from tests.unit.test_service_support import (
    ComposerCli,
    blueprint,
    running_service,
    standin_builder,
)
from tests.workerfarm import CLIENT_TOKEN, ROOT, WORKER_TOKEN, free_port, wait_until, worker_processes

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL


def _worker_lines(cli: ComposerCli, compose_id: str, text: str) -> list[str]:
    return [
        line
        for line in cli.log(compose_id).splitlines()
        if line.startswith("imgbuild-service:") and text in line
    ]


def _start(cli: ComposerCli, ref: str, arch: str | None = None) -> str:
    body: dict[str, object] = {"blueprint_name": "demo", "compose_type": "qcow2", "container_ref": ref}
    if arch:
        body["arch"] = arch
    answer = cli.raw("POST", "/api/v1/compose", json.dumps(body).encode(), "application/json")
    assert answer.status == 200, answer.body
    return str(answer.json()["build_id"])


def test_tokens_are_checked_both_ways(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", token=CLIENT_TOKEN, worker_token=WORKER_TOKEN, workers=0) as (
        service,
        _,
    ):
        host, port = service.tcp_address
        claim = json.dumps({"worker": "w1", "labels": [], "wait": 0}).encode()
        for token, status in (
            ("", 401),
            (CLIENT_TOKEN, 401),
            ("worker-token-wrong", 401),
            (WORKER_TOKEN, 200),
        ):
            worker = ComposerCli(tcp=(host, port), token=token)
            answer = worker.raw("POST", "/api/worker/v1/claim", claim, "application/json")
            assert answer.status == status, (token, answer.body)
        assert ComposerCli(tcp=(host, port), token=WORKER_TOKEN).get("/api/v1/blueprints/list").status == 401
        assert ComposerCli(tcp=(host, port), token=CLIENT_TOKEN).get("/api/v1/blueprints/list").status == 200
        # the worker API wants the worker token on the Unix socket too
        local = ComposerCli(service.config.socket_path)
        assert local.raw("POST", "/api/worker/v1/claim", claim, "application/json").status == 401


def test_a_service_without_a_worker_token_has_no_worker_api(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", token=CLIENT_TOKEN) as (service, _):
        worker = ComposerCli(tcp=service.tcp_address, token=CLIENT_TOKEN)
        claim = json.dumps({"worker": "w1", "labels": [], "wait": 0}).encode()
        assert worker.raw("POST", "/api/worker/v1/claim", claim, "application/json").status == 401


def test_workers_build_route_by_label_and_survive_a_killed_worker(tmp_path: Path) -> None:
    """Four workers; a hanging compose's worker is SIGKILLed: it is requeued once, and when its second
    worker is killed too it fails with the reason; the rest are built once each; aarch64 composes go only
    to w3, the one worker labelled for it."""
    port = free_port()
    builder = standin_builder(tmp_path)
    with running_service(
        tmp_path / "state",
        token=CLIENT_TOKEN,
        worker_token=WORKER_TOKEN,
        workers=0,
        port=port,
        heartbeat_timeout=2.0,
    ) as (service, cli):
        assert cli.push(blueprint()).json() == {"status": True}
        server = f"http://127.0.0.1:{port}"
        # the compose that hangs runs on two of w1, w2, w4 (both killed); w3 builds aarch64 only
        labels = {"w1": "arch:x86_64", "w2": "arch:x86_64", "w3": "arch:aarch64", "w4": "arch:x86_64"}
        with worker_processes(tmp_path, server, labels, builder) as workers:
            hang = _start(cli, "oci:/standin/hang", "x86_64")  # runs until its worker is killed
            wait_until(
                lambda: cli.info(hang)["queue_status"] == "RUNNING", 30, "the hanging compose to start"
            )
            first = str(cli.info(hang)["worker"])
            arm = [_start(cli, "oci:/standin/slow", "aarch64") for _ in range(3)]
            plain = [_start(cli, "oci:/standin/slow") for _ in range(6)]
            failing = _start(cli, "oci:/standin/fail")
            workers[first].kill()
            # requeued once: another worker takes it, and is killed too
            wait_until(lambda: cli.info(hang).get("worker") not in (None, first), 60, "the requeue")
            second = str(cli.info(hang)["worker"])
            workers[second].kill()
            for compose_id in [hang, *arm, *plain, failing]:
                assert cli.wait(compose_id, timeout=120) in ("FINISHED", "FAILED")
            info = cli.info(hang)
            assert info["queue_status"] == "FAILED"
            assert f"worker {second} stopped sending heartbeats" in info["reason"]
            assert "requeued once already" in info["reason"]
            assert len(_worker_lines(cli, hang, "): requeued")) == 1
            for compose_id in arm + plain:
                compose = service.store.compose(compose_id)
                assert compose is not None
                if compose.status is ComposeStatus.FAILED:  # it ran on a killed worker, twice
                    assert "stopped sending heartbeats" in str(compose.reason)
                    continue
                assert len(_worker_lines(cli, compose_id, "compose FINISHED on worker")) == 1
                claimed = _worker_lines(cli, compose_id, "claimed by worker")
                if compose_id in arm:
                    assert all("claimed by worker w3 " in line for line in claimed), claimed
                image = cli.get(f"/api/v1/compose/image/{compose_id}")
                assert image.status == 200 and image.body.startswith(b"qcow2:oci:/standin/slow\n")
            assert (
                cli.info(failing)["reason"] == "the builder failed (exit 1): the stand-in was asked to fail"
            )
            assert "started pid=" in cli.log(failing)  # the builder's log came back from the worker
            listed = cli.get("/api/v1/workers").json()["workers"]
            assert {w["name"] for w in listed} == {"w1", "w2", "w3", "w4"}
            by_name = {w["name"]: w for w in listed}
            assert by_name["w3"]["labels"] == ["arch:aarch64"]
        # the killed workers' builders went with them (setpriv --pdeathsig): no stand-in left running
        assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _is_standin(p, tmp_path)]


def _is_standin(cmdline: Path, directory: Path) -> bool:
    try:
        return str(directory / "standin_builder.py").encode() in cmdline.read_bytes()
    except OSError:
        return False


def test_a_cancel_reaches_the_worker(tmp_path: Path) -> None:
    port = free_port()
    builder = standin_builder(tmp_path)
    with running_service(
        tmp_path / "state", token=CLIENT_TOKEN, worker_token=WORKER_TOKEN, workers=0, port=port
    ) as (_, cli):
        cli.push(blueprint())
        with worker_processes(tmp_path, f"http://127.0.0.1:{port}", {"w1": "arch:x86_64"}, builder):
            hang = _start(cli, "oci:/standin/hang")
            wait_until(lambda: "started pid=" in cli.log(hang), 30, "the build's log at the service")
            answer = cli.raw("DELETE", f"/api/v1/compose/cancel/{hang}")
            assert answer.json() == {"uuid": hang, "status": True}
            assert cli.info(hang)["queue_status"] == "FAILED"
            assert cli.info(hang)["reason"] == "canceled by request"
            assert "stopping on SIGTERM" in cli.log(hang)  # the builder itself was stopped, then reported
            # the worker goes on with the next compose
            after = _start(cli, "oci:/standin/ok")
            assert cli.wait(after, timeout=30) == "FINISHED"


def test_a_service_restart_during_a_build_loses_nothing(tmp_path: Path) -> None:
    """The service stops while a worker builds; the worker builds on, and reports to the restarted one."""
    port = free_port()
    builder = standin_builder(tmp_path)
    state = tmp_path / "state"
    with worker_processes(tmp_path, f"http://127.0.0.1:{port}", {"w1": "arch:x86_64"}, builder):
        with running_service(state, token=CLIENT_TOKEN, worker_token=WORKER_TOKEN, workers=0, port=port) as (
            _,
            cli,
        ):
            cli.push(blueprint())
            long = _start(cli, "oci:/standin/sleep-4")
            waiting = _start(cli, "oci:/standin/ok")
            wait_until(lambda: cli.info(long)["queue_status"] == "RUNNING", 30, "the build to start")
        time.sleep(2.0)  # the service is down: the worker's heartbeats and log fail meanwhile
        with running_service(state, token=CLIENT_TOKEN, worker_token=WORKER_TOKEN, workers=0, port=port) as (
            _,
            cli,
        ):
            assert cli.wait(long, timeout=60) == "FINISHED"
            assert cli.wait(waiting, timeout=60) == "FINISHED"
            assert len(_worker_lines(cli, long, "compose FINISHED on worker w1")) == 1
            assert len(_worker_lines(cli, long, "claimed by worker")) == 1
            assert "slept 4" in cli.log(long)  # the whole log arrived, what was written while it was down too


def test_a_worker_that_cannot_report_abandons_the_job_and_reconnects(tmp_path: Path) -> None:
    """The service is down when the build ends and stays down past the worker's --give-up: the worker
    drops the job (its files too) and claims again once the service is back; the compose, silent since,
    is requeued and built again by the same worker (run 2), and completes once."""
    port = free_port()
    state = tmp_path / "state"
    options = {"token": CLIENT_TOKEN, "worker_token": WORKER_TOKEN, "workers": 0, "port": port}
    labels = {"w1": "arch:x86_64"}
    server = f"http://127.0.0.1:{port}"
    with worker_processes(tmp_path, server, labels, standin_builder(tmp_path), give_up=1.0) as workers:
        with running_service(state, heartbeat_timeout=3.0, **options) as (_, cli):  # type: ignore[arg-type]
            cli.push(blueprint())
            compose_id = _start(cli, "oci:/standin/sleep-2")
            wait_until(lambda: cli.info(compose_id)["queue_status"] == "RUNNING", 30, "the build to start")
        jobs = workers["w1"].cache / "jobs"
        wait_until(lambda: not any(jobs.iterdir()), 30, "the worker to drop the job")
        with running_service(state, heartbeat_timeout=3.0, **options) as (_, cli):  # type: ignore[arg-type]
            assert cli.wait(compose_id, timeout=60) == "FINISHED"
            assert len(_worker_lines(cli, compose_id, "claimed by worker w1 (run 2)")) == 1
            assert len(_worker_lines(cli, compose_id, "compose FINISHED on worker")) == 1
        assert f"compose {compose_id}: abandoned" in workers["w1"].output()


def test_imgbuild_workers_lists_them(tmp_path: Path) -> None:
    port = free_port()
    with running_service(
        tmp_path / "state", token=CLIENT_TOKEN, worker_token=WORKER_TOKEN, workers=0, port=port
    ):
        labels = {"w1": "arch:x86_64,iso", "w2": "arch:aarch64"}
        with worker_processes(tmp_path, f"http://127.0.0.1:{port}", labels, standin_builder(tmp_path)):
            client = WeldrClient(url=f"http://127.0.0.1:{port}", token=CLIENT_TOKEN)
            wait_until(lambda: len(client.call("GET", "/api/v1/workers")["workers"]) == 2, 30, "two workers")
            token_file = tmp_path / "client.token"
            token_file.write_text(CLIENT_TOKEN)
            url = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", "builder", "workers", "--url", url, "--token-file", str(token_file)]
            listing = run.run(
                argv,
                env={"PYTHONPATH": str(ROOT)},
            ).out
            lines = listing.splitlines()
            assert lines[0].split() == ["NAME", "LABELS", "LAST", "SEEN", "COMPOSE"]
            assert lines[1].split()[:2] == ["w1", "arch:x86_64,iso"] and lines[1].endswith("-")
            assert lines[2].split()[:2] == ["w2", "arch:aarch64"]


def test_an_unreachable_database_is_one_line_exit_2_without_the_password(tmp_path: Path) -> None:
    state, sockdir = tmp_path / "state", tmp_path / "sock"
    url = f"postgresql://imgbuild:pw-s3cret@/imgbuild?host={tmp_path}/no-server"
    argv = [
        sys.executable,
        "-m",
        "builder",
        "serve",
        "--state",
        str(state),
        "--socket",
        f"{sockdir}/api.socket",
    ]
    result = run.run([*argv, "--database", url], env={"PYTHONPATH": str(ROOT)}, check=False)
    assert result.returncode == 2
    error = result.stderr.decode()
    assert error.startswith("imgbuild: error: cannot open postgresql+psycopg://imgbuild:***@/imgbuild"), error
    assert "pw-s3cret" not in error and "Traceback" not in error
    assert not state.exists() and not sockdir.exists()  # a failed start creates nothing
    bad = run.run([*argv, "--database", "mysql://x@y/z"], env={"PYTHONPATH": str(ROOT)}, check=False)
    assert bad.returncode == 2 and "--database wants a URL" in bad.stderr.decode()


def test_workers_0_needs_remote_workers(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "builder", "serve", "--state", str(tmp_path / "s"), "--workers", "0"]
    result = run.run(argv, env={"PYTHONPATH": str(ROOT)}, check=False)
    assert (
        result.returncode == 2
        and "--workers 0 builds nothing without remote workers" in result.stderr.decode()
    )
