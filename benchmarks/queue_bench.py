"""Queue overhead: from `POST /compose` to the builder's first instruction, for the service's own worker
(the baseline), for 1 and for 3 remote workers (`imgbuild worker` processes over HTTP), with the state in
SQLite and in PostgreSQL (a throw-away cluster). The builder is a stand-in that records when it started
and writes a tiny image, so only the queue is measured.

    .venv/bin/python benchmarks/queue_bench.py [--composes 10]

Two figures per setting: `idle` (one compose at a time, every worker waiting: the wake-up path) and
`burst` (all composes at once: mean of start-to-build-start over the burst, which includes waiting for a
free worker; with 3 workers it should be about a third of 1 worker's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgcluster import start_cluster  # noqa: E402
from tests.unit.test_service_support import DATABASE, ComposerCli, blueprint, running_service  # noqa: E402
from tests.workerfarm import CLIENT_TOKEN, WORKER_TOKEN, free_port, worker_processes  # noqa: E402

STANDIN = r"""
import json, os, sys, time
started = time.time()
args = sys.argv[1:]
output = args[args.index("--output") + 1]
with open(os.path.join(output, "disk.qcow2"), "wb") as f:
    f.write(b"x" * 4096)
with open(os.path.join(output, "result.json"), "w") as f:
    json.dump({"outputs": [{"path": "disk.qcow2"}], "started": started}, f)
time.sleep(0.3)  # a build takes some time: a burst must queue
"""


def _started(cli: ComposerCli, compose_id: str) -> float:
    """When the builder started, from the result.json in the compose's metadata tar."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(cli.get(f"/api/v1/compose/metadata/{compose_id}").body)) as tar:
        member = tar.extractfile(f"{compose_id}.json")
        assert member is not None
        return float(json.loads(member.read())["started"])


def _start(cli: ComposerCli) -> tuple[str, float]:
    body = {"blueprint_name": "bench", "compose_type": "qcow2", "container_ref": "oci:/standin/bench"}
    posted = time.time()
    answer = cli.raw("POST", "/api/v1/compose", json.dumps(body).encode(), "application/json")
    return str(answer.json()["build_id"]), posted


def measure(cli: ComposerCli, composes: int) -> tuple[float, float]:
    idle = []
    for _ in range(composes):
        compose_id, posted = _start(cli)
        assert cli.wait(compose_id, timeout=60) == "FINISHED", cli.log(compose_id)
        idle.append(_started(cli, compose_id) - posted)
    burst = [_start(cli) for _ in range(composes)]
    delays = []
    for compose_id, posted in burst:
        assert cli.wait(compose_id, timeout=120) == "FINISHED", cli.log(compose_id)
        delays.append(_started(cli, compose_id) - posted)
    return statistics.median(idle), statistics.mean(delays)


@contextmanager
def service(directory: Path, remote: int) -> Iterator[ComposerCli]:
    builder = (sys.executable, str(directory / "standin.py"))
    port = free_port()
    with running_service(
        directory / "state",
        builder=builder,
        workers=0 if remote else 1,
        token=CLIENT_TOKEN,
        worker_token=WORKER_TOKEN,
        port=port,
        allow_refs=("oci:/standin/*",),
    ) as (_, cli):
        cli.push(blueprint("bench"))
        if not remote:
            yield cli
            return
        labels = {f"w{n}": "arch:x86_64" for n in range(1, remote + 1)}
        with worker_processes(directory, f"http://127.0.0.1:{port}", labels, builder):
            yield cli


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--composes", type=int, default=10)
    args = parser.parse_args()
    cluster = start_cluster()
    try:
        for engine in ("sqlite", "postgresql"):
            baseline = 0.0
            for remote in (0, 1, 3):
                DATABASE.url = cluster.create_database() if engine == "postgresql" else None
                with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
                    directory = Path(tmp)
                    (directory / "standin.py").write_text(STANDIN)
                    with service(directory, remote) as cli:
                        idle, burst = measure(cli, args.composes)
                what = "local worker (baseline)" if remote == 0 else f"{remote} remote worker(s)"
                baseline = baseline or idle
                print(
                    f"{engine:<10} {what:<24} idle {idle * 1000:7.1f} ms ({idle / baseline:4.1f}x)  "
                    f"burst of {args.composes}: mean wait {burst * 1000:7.1f} ms",
                    flush=True,
                )
    finally:
        DATABASE.url = None
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
