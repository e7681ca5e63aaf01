"""The compose queue: a bounded pool of worker threads, each running one builder child process at a time.

Jobs live in the state database (store.claim_next moves WAITING to RUNNING atomically), so a compose is
never lost and never run twice, and waiting composes survive a restart. Each compose runs the same builder
as the command line (`python -m builder TYPE REF --blueprint ... --output ... --progress=json`) through
builder.run.spawn (buildproc.run_build) in its own session, so cancelling kills its whole process group:
SIGTERM, then SIGKILL after a grace period.

A compose with an upload runs the builder's upload command (`ami ... --aws-region R --aws-ami-name NAME`);
its credentials are held here, in memory only, from the request until its builder starts, and go only into
that child's environment (uploads.child_env). Waiting upload composes whose credentials a restart lost fail.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImgbuildError
from builder.service.buildproc import (
    LOG_NAME,
    append_log,
    cmdline_names,
    compose_dir,
    failure_reason,
    find_image,
    run_build,
    stop_group,
)
from builder.service.store import Compose, ComposeStatus, Store
from builder.service.uploads import RESTARTED_REASON, AwsUpload, builder_arguments, child_env

log = logging.getLogger(__name__)

STOPPED_REASON = "the service stopped while the compose was running"
CANCELED_REASON = "canceled by request"
BLUEPRINT_NAME = "blueprint.toml"
OUTPUT_NAME = "output"
__all__ = [
    "LOG_NAME",
    "append_log",
    "compose_dir",
    "failure_reason",
    "find_image",
]  # the service's other modules use them from here


@dataclass(frozen=True)
class QueueConfig:
    state_dir: Path
    workers: int = 1
    # The builder's command line up to the compose type; tests may point it at another program.
    builder_command: tuple[str, ...] = (sys.executable, "-m", "builder")
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL
    remote_cancel_wait: float = 20.0  # how long a cancel waits for a remote worker to stop its build


def builder_argv(config: QueueConfig, compose: Compose) -> list[str]:
    directory = compose_dir(config.state_dir, compose.id)
    size = ["--size", f"{compose.image_size}B"] if compose.image_size > 0 else []
    size += ["--arch", compose.arch] if compose.arch else []
    upload = builder_arguments(compose.upload) if compose.upload is not None else []
    return [
        *config.builder_command,
        compose.compose_type,
        compose.container_ref,
        "--blueprint",
        str(directory / BLUEPRINT_NAME),
        "--output",
        str(directory / OUTPUT_NAME),
        *size,
        "--progress=json",
        *upload,
    ]


class ComposeQueue:
    def __init__(self, store: Store, config: QueueConfig) -> None:
        self.store = store
        self.config = config
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}  # running compose id -> "stop it" signal
        self._done: dict[str, threading.Event] = {}  # running compose id -> "its worker let go"
        self._uploads: dict[str, AwsUpload] = {}  # waiting compose id -> its upload, with the credentials

    # -- upload credentials (memory only)

    def hold_upload(self, compose_id: str, upload: AwsUpload) -> None:
        """Keep a compose's upload, credentials included, until its builder starts (before it is queued)."""
        with self._lock:
            self._uploads[compose_id] = upload

    def drop_upload(self, compose_id: str) -> None:
        with self._lock:
            self._uploads.pop(compose_id, None)

    def holds_upload(self, compose_id: str) -> bool:
        with self._lock:
            return compose_id in self._uploads

    def _take_upload(self, compose_id: str) -> AwsUpload | None:
        with self._lock:
            return self._uploads.pop(compose_id, None)

    # -- life cycle

    def start(self) -> None:
        self.recover()
        for number in range(self.config.workers):  # 0: every compose is built by remote workers
            thread = threading.Thread(target=self._work, name=f"compose-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def recover(self) -> None:
        """After a restart: composes left RUNNING failed; a builder left behind by a killed service is
        stopped (only when its command line still names the compose, so a reused pid is never hit)."""
        for compose in self.store.fail_running(STOPPED_REASON):
            log.warning("compose %s was running when the service stopped: marked FAILED", compose.id)
            if compose.pid and cmdline_names(compose.pid, compose.id):
                stop_group(compose.pid, self.config.grace)
            self._append_log(compose.id, f"compose FAILED: {STOPPED_REASON}")
        for compose in self.store.composes(ComposeStatus.WAITING):
            lost = compose.upload is not None and not self.holds_upload(compose.id)
            if lost and self.store.cancel_waiting(compose.id, RESTARTED_REASON):
                log.warning(
                    "compose %s waited with an upload: marked FAILED (%s)", compose.id, RESTARTED_REASON
                )
                self._append_log(compose.id, f"compose FAILED: {RESTARTED_REASON}")

    def stop(self) -> None:
        """Stop the workers; running composes are killed and reported FAILED (STOPPED_REASON)."""
        self._stopping.set()
        with self._lock:
            for event in self._cancel.values():
                event.set()
        self.store.waker.wake()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        with self._lock:
            self._uploads.clear()

    def notify(self) -> None:
        self.store.waker.wake()

    def cancel(self, compose_id: str) -> bool:
        """Cancel a WAITING or RUNNING compose; False when it is in neither state."""
        if self.store.cancel_waiting(compose_id, CANCELED_REASON):
            self.drop_upload(compose_id)
            self._append_log(compose_id, f"compose FAILED: {CANCELED_REASON}")
            return True
        if not self.store.request_cancel(compose_id):
            return False
        running = self.store.compose(compose_id)
        if running is not None and running.worker is not None:
            self._cancel_remote(running)
            return True
        # A worker that has just claimed the compose registers its events a moment later (and then
        # sees the flag set above); wait for that, so the answer comes once the builder is gone.
        deadline = time.monotonic() + 2.0
        while True:
            with self._lock:
                event, done = self._cancel.get(compose_id), self._done.get(compose_id)
            if event is not None and done is not None:
                event.set()
                done.wait(self.config.grace + 5.0)
                return True
            current = self.store.compose(compose_id)
            if current is None or current.status is not ComposeStatus.RUNNING or time.monotonic() > deadline:
                return True
            time.sleep(0.02)

    def _cancel_remote(self, compose: Compose) -> None:
        """A remote worker learns of the cancel at its next heartbeat, stops its builder and reports.
        One that does not within its heartbeat timeout and the grace period is not waited for: the
        compose fails here, and the worker's late report is refused (its claim is no longer current)."""
        deadline = time.monotonic() + self.config.remote_cancel_wait + self.config.grace
        while time.monotonic() < deadline:
            current = self.store.compose(compose.id)
            if current is None or current.status is not ComposeStatus.RUNNING:
                return
            time.sleep(0.1)
        if self.store.finish(
            compose.id, ComposeStatus.FAILED, CANCELED_REASON, None, compose.worker, compose.runs
        ):
            self._append_log(
                compose.id, f"compose FAILED: {CANCELED_REASON} (worker {compose.worker} did not stop it)"
            )

    # -- the workers

    def _work(self) -> None:
        try:
            while not self._stopping.is_set():
                compose = self.store.claim_next()
                if compose is None:
                    if not self._stopping.is_set():  # a wake-up lost to this race costs a second
                        self.store.waker.wait(timeout=1.0)
                    continue
                self._run_guarded(compose)
        finally:
            self.store.close_thread_connection()

    def _run_guarded(self, compose: Compose) -> None:
        cancel, done = threading.Event(), threading.Event()
        with self._lock:
            self._cancel[compose.id], self._done[compose.id] = cancel, done
        try:
            if self.store.cancel_requested(compose.id) or self._stopping.is_set():
                cancel.set()
            status, reason, image = self._run(compose, cancel)
        except Exception as e:  # a bug must not kill the worker and leave the compose RUNNING forever
            log.exception("compose %s: worker error", compose.id)
            status, reason, image = ComposeStatus.FAILED, f"internal error: {e}", None
        finally:
            with self._lock:
                self._cancel.pop(compose.id, None)
                self._done.pop(compose.id, None)
                self._uploads.pop(compose.id, None)
        self._append_log(compose.id, f"compose {status.value}" + (f": {reason}" if reason else ""))
        self.store.finish(compose.id, status, reason, image)
        done.set()

    def _run(self, compose: Compose, cancel: threading.Event) -> tuple[ComposeStatus, str | None, str | None]:
        # the builder's own settings, and the path the service itself was imported from
        extra = {k: v for k, v in os.environ.items() if k.startswith("IMGBUILD_") or k == "PYTHONPATH"}
        if compose.upload is not None:
            upload = self._take_upload(compose.id)
            if upload is None:  # the service restarted since the request
                return ComposeStatus.FAILED, RESTARTED_REASON, None
            extra |= child_env(upload, dict(os.environ))
        directory = compose_dir(self.config.state_dir, compose.id)
        output = directory / OUTPUT_NAME
        output.mkdir(parents=True, exist_ok=True)
        argv = builder_argv(self.config, compose)
        self._append_log(compose.id, "running " + " ".join(argv))
        try:
            returncode, canceled = run_build(
                argv,
                directory,
                extra,
                cancel,
                self.config.grace,
                lambda pid: self.store.set_pid(compose.id, pid),
            )
        except (OSError, ImgbuildError) as e:
            return ComposeStatus.FAILED, f"the builder could not start: {e}", None
        if canceled:
            reason = STOPPED_REASON if self._stopping.is_set() else CANCELED_REASON
            return ComposeStatus.FAILED, reason, None
        if returncode != 0:
            detail = failure_reason(directory / LOG_NAME) or "no output"
            return ComposeStatus.FAILED, f"the builder failed (exit {returncode}): {detail}", None
        try:
            return ComposeStatus.FINISHED, None, find_image(output)
        except ImgbuildError as e:
            return ComposeStatus.FAILED, e.message, None

    def _append_log(self, compose_id: str, line: str) -> None:
        append_log(self.config.state_dir, compose_id, line)
