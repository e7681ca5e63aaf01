"""`imgbuild worker`: takes composes from a service's worker API and builds them with the same builder.

One compose at a time: claim (a long poll), run the builder as the service's local workers do
(buildproc.run_build: its own process group, stopped as a whole), stream the log and send heartbeats while
it runs, then upload the outputs and report. The builder is started under `setpriv --pdeathsig TERM`, so a
worker killed outright (SIGKILL) takes its build down with it: the builder unwinds on SIGTERM (loop devices,
mounts) instead of building on for a compose the service will give to another worker.

Losing the service is routine (a restart, the network): the build goes on, heartbeats and log are retried,
and the result is reported once the service answers again. The job is abandoned (its files removed) when
the service says the claim is no longer current (409: the compose was requeued or canceled meanwhile) or
when it stays unreachable for `give_up` seconds after the build ended; then the worker claims again.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImgbuildError
from builder.service.buildproc import LOG_NAME, failure_reason, find_image, run_build
from builder.service.worker_api import Job, NotYours, Refused, ServerLost, WorkerApi

log = logging.getLogger(__name__)

CANCELED = "canceled by request"
LOG_CHUNK = 1 << 20


@dataclass(frozen=True)
class WorkerConfig:
    cache: Path  # jobs/ (a compose's files while it runs) and imgbuild/ (the builder's cache)
    builder_command: tuple[str, ...] = (sys.executable, "-m", "builder")
    grace: float = 10.0  # SIGTERM to SIGKILL when a build is stopped
    poll: float = 20.0  # seconds a claim waits at the service for a compose
    give_up: float = 300.0  # seconds of retrying to report a finished build before abandoning it
    max_jobs: int = 0  # stop after this many (0: never; for tests and benchmarks)


@dataclass(frozen=True)
class Outcome:
    status: str  # FINISHED, FAILED, or ABANDON (the claim was lost: report nothing)
    reason: str | None = None
    image: str | None = None


class Worker:
    def __init__(self, api: WorkerApi, config: WorkerConfig, stopping: threading.Event) -> None:
        self.api = api
        self.config = config
        self.stopping = stopping

    def run(self) -> None:
        """Claim and build until `stopping` (or `max_jobs`); the service may come and go meanwhile."""
        backoff, done = 1.0, 0
        lost_since: float | None = None
        while not self.stopping.is_set():
            try:
                job, interval = self.api.claim(self.config.poll)
            except ServerLost as e:
                if lost_since is None:
                    lost_since = time.monotonic()
                    log.warning("the service is unreachable (%s): retrying", e)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if lost_since is not None:
                log.warning("the service answers again")
                lost_since, backoff = None, 1.0
            if job is None:
                continue
            log.warning("compose %s (run %d): %s %s", job.id, job.run, job.compose_type, job.container_ref)
            self._job(job, interval)
            done += 1
            if self.config.max_jobs and done >= self.config.max_jobs:
                return

    # -- one job

    def _job(self, job: Job, interval: float) -> None:
        directory = self.config.cache / "jobs" / job.id
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "output").mkdir(parents=True)
        try:
            (directory / "blueprint.toml").write_text(job.blueprint, encoding="utf-8")
            outcome = self._build(job, directory, interval)
            if outcome.status == "ABANDON":
                log.warning("compose %s: abandoned (%s)", job.id, outcome.reason)
            else:
                self._report(job, directory, outcome)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _argv(self, job: Job, directory: Path) -> list[str]:
        size = ["--size", f"{job.image_size}B"] if job.image_size > 0 else []
        arch = ["--arch", job.arch] if job.arch else []
        return [
            "setpriv",
            "--pdeathsig",
            "TERM",
            "--",
            *self.config.builder_command,
            job.compose_type,
            job.container_ref,
            "--blueprint",
            str(directory / "blueprint.toml"),
            "--output",
            str(directory / "output"),
            *size,
            *arch,
            "--progress=json",
        ]

    def _build(self, job: Job, directory: Path, interval: float) -> Outcome:
        env = {k: v for k, v in os.environ.items() if k.startswith("IMGBUILD_") or k == "PYTHONPATH"}
        env["IMGBUILD_CACHE"] = str(self.config.cache / "imgbuild")
        cancel = threading.Event()
        monitor = Monitor(self.api, job, directory / LOG_NAME, interval, cancel)
        monitor.start()
        try:
            argv = self._argv(job, directory)
            with open(directory / LOG_NAME, "ab") as f:
                f.write(f"imgbuild-worker: {self.api.name} running {' '.join(argv[4:])}\n".encode())
            stop_on = _either(cancel, self.stopping)
            returncode, stopped = run_build(
                argv, directory, env, stop_on, self.config.grace, lambda pid: None
            )
        except (OSError, ImgbuildError) as e:
            return Outcome("FAILED", f"worker {self.api.name}: the builder could not start: {e}")
        finally:
            monitor.stop()
        if monitor.lost:
            return Outcome("ABANDON", "the service gave the compose up")
        if stopped:
            reason = CANCELED if monitor.canceled else f"worker {self.api.name} was stopped"
            return Outcome("FAILED", reason)
        if returncode != 0:
            detail = failure_reason(directory / LOG_NAME) or "no output"
            return Outcome("FAILED", f"the builder failed (exit {returncode}): {detail}")
        try:
            return Outcome("FINISHED", image=find_image(directory / "output"))
        except ImgbuildError as e:
            return Outcome("FAILED", e.message)

    def _report(self, job: Job, directory: Path, outcome: Outcome) -> None:
        """The rest of the log, the outputs, the result; retried while the service is away."""
        steps: list[Callable[[], None]] = []  # the log went while the build ran (Monitor)
        if outcome.status == "FINISHED" and outcome.image is not None:
            output = directory / "output"
            image, result = output / outcome.image, output / "result.json"
            put = self.api.store if job.object_store else self.api.upload
            steps += [lambda: put(job, image), lambda: self.api.upload(job, result)]
        steps.append(lambda: self.api.finish(job, outcome.status, outcome.reason, outcome.image))
        deadline = time.monotonic() + self.config.give_up
        for step in steps:
            while True:
                try:
                    step()
                    break
                except NotYours as e:
                    log.warning("compose %s: abandoned, %s", job.id, e)
                    return
                except Refused as e:  # a request the service cannot take: retrying will not help
                    log.error("compose %s: abandoned, %s", job.id, e.message)
                    return
                except ServerLost as e:
                    if time.monotonic() > deadline:
                        log.warning("compose %s: abandoned, the service is still unreachable (%s)", job.id, e)
                        return
                    time.sleep(1.0)
        log.warning(
            "compose %s: %s", job.id, outcome.status + (f" ({outcome.reason})" if outcome.reason else "")
        )


class Monitor:
    """While a build runs: its log to the service as it grows, and heartbeats; sets `cancel` when the
    service asks for it or no longer counts the compose as ours."""

    def __init__(self, api: WorkerApi, job: Job, log_path: Path, interval: float, cancel: threading.Event):
        self.api, self.job, self.log_path, self.interval, self.cancel = api, job, log_path, interval, cancel
        self.sent = 0
        self.canceled = False
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"monitor-{job.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if not self.lost:
            self._send_log()  # the tail, before the outputs and the result

    def _loop(self) -> None:
        next_beat = 0.0
        while not self._stop.wait(0.5):
            if time.monotonic() >= next_beat:  # before the log: a long log upload must not delay it
                next_beat = time.monotonic() + self.interval
                self._beat()
            self._send_log()

    def _beat(self) -> None:
        try:
            owned, cancel = self.api.heartbeat(self.job)
        except ServerLost as e:
            log.debug("heartbeat: %s", e)
            return
        except Refused as e:
            log.error("heartbeat: %s", e.message)
            return
        if not owned:
            self.lost = True
        if cancel:
            self.canceled = owned
            self.cancel.set()

    def _send_log(self) -> None:
        try:
            self.sent = _send_rest(self.api, self.job, self.log_path, self.sent)
        except (ServerLost, NotYours, Refused) as e:
            log.debug("log: %s", e)


def _send_rest(api: WorkerApi, job: Job, path: Path, offset: int) -> int:
    """Send the log from `offset` on, in chunks; the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(LOG_CHUNK):
                api.send_log(job, chunk)
                offset += len(chunk)
    except FileNotFoundError:
        pass
    return offset


class _Either(threading.Event):
    """Set when either of two events is (run_build polls is_set())."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        super().__init__()
        self.first, self.second = first, second

    def is_set(self) -> bool:
        return self.first.is_set() or self.second.is_set()


def _either(first: threading.Event, second: threading.Event) -> threading.Event:
    return _Either(first, second)
