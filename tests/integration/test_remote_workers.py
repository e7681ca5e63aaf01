"""A farm with real builds: a service with its state in a throw-away PostgreSQL cluster and no local
workers, three `imgbuild worker` processes with caches of their own, 20 composes of the example OS (one for
aarch64), one worker SIGKILLed while its build has the disk mounted. Every compose ends, none is lost, none
completes twice, the aarch64 one is built by the worker labelled for it, no loop device or mount is left."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.imagebuilds import leaked_resources
from tests.unit.test_service_support import DATABASE, EXAMPLE_BLUEPRINT, allowing, log_tail, running_service
from tests.workerfarm import CLIENT_TOKEN, WORKER_TOKEN, free_port, wait_until, worker_processes

if TYPE_CHECKING:
    from builder.example import ExampleImage
    from tests.pgcluster import Cluster

COMPOSES = 20


@pytest.fixture
def postgres_database(postgres_cluster: Cluster) -> Iterator[None]:
    DATABASE.url = postgres_cluster.create_database()
    try:
        yield
    finally:
        DATABASE.url = None


def _lines(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("imgbuild-service:") and text in line]


@pytest.mark.usefixtures("postgres_database")
def test_twenty_composes_three_workers_one_killed(
    example_x86_64: ExampleImage, example_aarch64: ExampleImage, builder_tmp: Path
) -> None:
    port = free_port()
    policy = (*allowing(example_x86_64.reference), *allowing(example_aarch64.reference))
    with running_service(
        builder_tmp / "state",
        token=CLIENT_TOKEN,
        worker_token=WORKER_TOKEN,
        workers=0,
        port=port,
        heartbeat_timeout=20.0,  # on this shared machine a 5 s timeout lost live workers
        allow_refs=policy,
    ) as (_, cli):
        assert cli.push(EXAMPLE_BLUEPRINT).json() == {"status": True}
        labels = {"w1": "arch:x86_64", "w2": "arch:x86_64", "w3": "arch:x86_64,arch:aarch64"}
        with worker_processes(builder_tmp, f"http://127.0.0.1:{port}", labels) as workers:
            started = time.monotonic()
            request = {"blueprint_name": "example", "compose_type": "qcow2", "arch": "aarch64"}
            request["container_ref"] = example_aarch64.reference
            answer = cli.raw("POST", "/api/v1/compose", json.dumps(request).encode(), "application/json")
            arm = str(answer.json()["build_id"])
            x86 = [cli.start_ok("example", "qcow2", example_x86_64.reference) for _ in range(COMPOSES - 1)]
            ids = [arm, *x86]

            def mounted_on_x86_worker() -> str | None:
                for compose_id in x86:
                    on_x86_only = cli.info(compose_id).get("worker") in ("w1", "w2")
                    if on_x86_only and '"stage": "ostree.deploy"' in cli.log(compose_id):
                        return compose_id
                return None

            deadline = time.monotonic() + 600
            while (killed_compose := mounted_on_x86_worker()) is None:
                assert time.monotonic() < deadline, "no build had its disk mounted on w1 or w2"
                time.sleep(0.2)
            killed = str(cli.info(killed_compose)["worker"])
            workers[killed].kill()
            for compose_id in ids:
                status = cli.wait(compose_id, timeout=900)
                assert status == "FINISHED", log_tail(cli, compose_id)
            elapsed = time.monotonic() - started
            entries = cli.get("/api/v1/compose/status/*").json()["uuids"]
            assert sorted(e["id"] for e in entries) == sorted(ids)  # none lost, none made up
            for compose_id in ids:
                log = cli.log(compose_id)
                assert len(_lines(log, "compose FINISHED on worker")) == 1, log_tail(cli, compose_id)
                claims = _lines(log, "claimed by worker")
                if compose_id == killed_compose:
                    assert len(claims) == 2, claims
                elif len(claims) != 1:  # only a compose whose worker went silent is claimed again
                    assert len(claims) == 2 and _lines(log, "stopped sending heartbeats"), log_tail(
                        cli, compose_id
                    )
            assert f"worker {killed} stopped sending heartbeats" in cli.log(killed_compose)
            assert all("claimed by worker w3 " in line for line in _lines(cli.log(arm), "claimed by worker"))
            image = cli.get(f"/api/v1/compose/image/{ids[-1]}")
            assert image.status == 200 and image.body[:4] == b"QFI\xfb"
            print(f"{COMPOSES} composes on 3 workers, one killed: {elapsed:.0f} s")
    # the killed worker's builder got SIGTERM (setpriv --pdeathsig) and unwinds on its own
    wait_until(lambda: leaked_resources(builder_tmp) == [], 120, "no loop device or mount left")
