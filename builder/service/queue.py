"""The compose queue: a bounded pool of worker threads, each running one builder child process at a time.

Jobs live in SQLite (store.claim_next moves WAITING to RUNNING atomically), so a compose is never lost and
never run twice, and waiting composes survive a restart. Each compose runs the same builder as the command
line (`python -m builder TYPE REF --blueprint ... --output ... --progress=json`) through builder.run.spawn in
its own session, so cancelling kills its whole process group: SIGTERM, then SIGKILL after a grace period.

A compose with an upload runs the builder's upload command (`ami ... --aws-region R --aws-ami-name NAME`);
its credentials are held here, in memory only, from the request until its builder starts, and go only into
that child's environment (uploads.child_env). Waiting upload composes whose credentials a restart lost fail.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from builder import run
from builder.errors import ImgbuildError
from builder.service.store import Compose, ComposeStatus, Store
from builder.service.uploads import RESTARTED_REASON, AwsUpload, builder_arguments, child_env

log = logging.getLogger(__name__)

STOPPED_REASON = "the service stopped while the compose was running"
CANCELED_REASON = "canceled by request"
LOG_NAME = "compose.log"
BLUEPRINT_NAME = "blueprint.toml"
OUTPUT_NAME = "output"
REASON_MAX = 400


@dataclass(frozen=True)
class QueueConfig:
    state_dir: Path
    workers: int = 1
    # The builder's command line up to the compose type; tests may point it at another program.
    builder_command: tuple[str, ...] = (sys.executable, "-m", "builder")
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL


def compose_dir(state_dir: Path, compose_id: str) -> Path:
    return state_dir / "composes" / compose_id


def builder_argv(config: QueueConfig, compose: Compose) -> list[str]:
    directory = compose_dir(config.state_dir, compose.id)
    size = ["--size", str(compose.image_size)] if compose.image_size > 0 else []
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


def _kill_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _probe(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop_group(pgid: int, grace: float, leader: run.Popen[bytes] | None = None) -> None:
    """SIGTERM the group, SIGKILL whatever is left after `grace` seconds. `leader` is the group's
    leader when it is our child: it must be reaped, or its zombie keeps the group "alive"."""
    if not _kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if leader is not None and leader.poll() is None:
            time.sleep(0.05)
            continue
        if not _probe(pgid):
            return
        time.sleep(0.05)
    _kill_group(pgid, signal.SIGKILL)


def _event_error(text: str) -> str | None:
    """The error of a `--progress=json` event ({"event": "build-end", "status": "failed", "error": ...})."""
    try:
        event = json.loads(text)
    except ValueError:
        return None
    error = event.get("error") if isinstance(event, dict) else None
    return error if isinstance(error, str) and error else None


def failure_reason(log_path: Path) -> str:
    """Why a build failed, from the end of its log: the builder's JSON failure event, else its
    "imgbuild: error:" line, else the last line that is neither a hint nor the service's own."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    for text in reversed(lines):
        error = _event_error(text) if text.startswith("{") else None
        if error is not None:
            return error[:REASON_MAX]
        if text.startswith("imgbuild: error:"):
            return text.removeprefix("imgbuild: error:").strip()[:REASON_MAX]
    for text in reversed(lines):
        if text and not text.startswith(("imgbuild-service:", "hint:", "{")):
            return text[:REASON_MAX]
    return ""


def find_image(output_dir: Path) -> str:
    """The image's file name from the builder's result.json; ImgbuildError when it is missing or unsafe."""
    try:
        result = json.loads((output_dir / "result.json").read_text())
        outputs = result["outputs"]
        path = Path(str(outputs[0]["path"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ImgbuildError(f"the builder's result.json is missing or malformed ({e})") from None
    image = path if path.is_absolute() else output_dir / path
    if image.parent.resolve() != output_dir.resolve() or image.is_symlink() or not image.is_file():
        raise ImgbuildError(f"the builder's result.json names {str(path)!r}, not a file in its output")
    return image.name


class ComposeQueue:
    def __init__(self, store: Store, config: QueueConfig) -> None:
        self.store = store
        self.config = config
        self._wakeup = threading.Condition()
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
        for number in range(max(1, self.config.workers)):
            thread = threading.Thread(target=self._work, name=f"compose-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def recover(self) -> None:
        """After a restart: composes left RUNNING failed; a builder left behind by a killed service is
        stopped (only when its command line still names the compose, so a reused pid is never hit)."""
        for compose in self.store.fail_running(STOPPED_REASON):
            log.warning("compose %s was running when the service stopped: marked FAILED", compose.id)
            if compose.pid and _cmdline_names(compose.pid, compose.id):
                _stop_group(compose.pid, self.config.grace)
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
        with self._wakeup:
            self._wakeup.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        with self._lock:
            self._uploads.clear()

    def notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    def cancel(self, compose_id: str) -> bool:
        """Cancel a WAITING or RUNNING compose; False when it is in neither state."""
        if self.store.cancel_waiting(compose_id, CANCELED_REASON):
            self.drop_upload(compose_id)
            self._append_log(compose_id, f"compose FAILED: {CANCELED_REASON}")
            return True
        if not self.store.request_cancel(compose_id):
            return False
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

    # -- the workers

    def _work(self) -> None:
        try:
            while not self._stopping.is_set():
                compose = self.store.claim_next()
                if compose is None:
                    with self._wakeup:
                        if not self._stopping.is_set():  # stop() notifies under this lock
                            self._wakeup.wait(timeout=1.0)
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
        with open(directory / LOG_NAME, "ab") as log_file:
            try:
                with run.spawn(
                    argv,
                    stdout=log_file,
                    stderr=run.STDOUT,
                    env=extra,
                    cwd=directory,
                    check=False,
                    new_session=True,
                ) as proc:
                    self.store.set_pid(compose.id, proc.pid)
                    canceled = self._wait(proc, cancel)
                    _kill_group(proc.pid, signal.SIGKILL)  # anything the builder left in its group
            except (OSError, ImgbuildError) as e:
                return ComposeStatus.FAILED, f"the builder could not start: {e}", None
        if canceled:
            reason = STOPPED_REASON if self._stopping.is_set() else CANCELED_REASON
            return ComposeStatus.FAILED, reason, None
        if proc.returncode != 0:
            detail = failure_reason(directory / LOG_NAME) or "no output"
            return ComposeStatus.FAILED, f"the builder failed (exit {proc.returncode}): {detail}", None
        try:
            return ComposeStatus.FINISHED, None, find_image(output)
        except ImgbuildError as e:
            return ComposeStatus.FAILED, e.message, None

    def _wait(self, proc: run.Popen[bytes], cancel: threading.Event) -> bool:
        """Wait for the builder; on `cancel`, stop its process group. True when it was stopped."""
        while True:
            try:
                proc.wait(timeout=0.2)
                return False
            except run.TimeoutExpired:
                pass
            if cancel.is_set():
                _stop_group(proc.pid, self.config.grace, proc)
                proc.wait()
                return True

    def _append_log(self, compose_id: str, line: str) -> None:
        directory = compose_dir(self.config.state_dir, compose_id)
        if not directory.is_dir():
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(directory / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(f"imgbuild-service: {stamp} {line}\n")


def _cmdline_names(pid: int, compose_id: str) -> bool:
    try:
        return compose_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
