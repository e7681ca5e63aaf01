"""Remote workers for the tests: `imgbuild worker` processes (the real command, or the same Worker with the
stand-in builder of tests/unit/test_service_support.py), each with its own cache directory."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder import run

ROOT = Path(__file__).resolve().parents[1]
CLIENT_TOKEN = "client-token-0123456789"
WORKER_TOKEN = "worker-token-9876543210"

# The worker with another builder command (what `imgbuild worker` runs, less its argument parsing).
DRIVER = """
import logging, signal, sys, threading
from pathlib import Path
from builder.service.worker import Worker, WorkerConfig
from builder.service.worker_api import WorkerApi
server, token_file, cache, name, labels, give_up = sys.argv[1:7]
builder = tuple(sys.argv[7:])
logging.basicConfig(level=logging.WARNING, format=name + ": %(message)s")
stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *args: stopping.set())
api = WorkerApi(server, Path(token_file).read_text().strip(), name, tuple(labels.split(",")))
config = WorkerConfig(Path(cache), builder_command=builder, grace=3.0, poll=2.0, give_up=float(give_up))
Worker(api, config, stopping).run()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class WorkerProcess:
    name: str
    cache: Path
    proc: run.Popen[bytes]
    log: IO[bytes]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except run.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


@contextmanager
def worker_processes(
    directory: Path,
    server: str,
    labels: dict[str, str],
    builder: tuple[str, ...] | None = None,
    token: str = WORKER_TOKEN,
    give_up: float = 60.0,
) -> Iterator[dict[str, WorkerProcess]]:
    """One worker per entry of `labels` (name -> comma-separated labels); `builder`: the stand-in's
    command, or None for the real `imgbuild worker`. All stopped (SIGTERM) on leaving."""
    token_file = directory / "worker.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k.startswith("IMGBUILD_")}
    env["PYTHONPATH"] = str(ROOT)
    workers: dict[str, WorkerProcess] = {}
    with ExitStack() as stack:
        for name, label_text in labels.items():
            cache = directory / f"cache-{name}"
            cache.mkdir(parents=True, exist_ok=True)
            if builder is None:
                argv = [sys.executable, "-m", "builder", "worker", "--server", server]
                argv += ["--token-file", str(token_file), "--cache", str(cache), "--name", name]
                for label in label_text.split(","):
                    argv += ["--label", label]
            else:
                argv = [sys.executable, "-c", DRIVER, server, str(token_file), str(cache), name, label_text]
                argv += [str(give_up), *builder]
            log = stack.enter_context(open(directory / f"{name}.log", "wb"))
            proc = stack.enter_context(run.spawn(argv, stdout=log, stderr=run.STDOUT, env=env, check=False))
            workers[name] = WorkerProcess(name, cache, proc, log)
        try:
            yield workers
        finally:
            for worker in workers.values():
                worker.stop()


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)
