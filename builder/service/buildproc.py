"""Running one build: the builder as a child in a process group of its own, stopped as a whole; what its
log and its output directory say afterwards. Shared by the service's local workers (queue.py) and the
remote worker (worker.py), so both run the builder exactly as the command line does.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from builder import run
from builder.errors import ImgbuildError

LOG_NAME = "compose.log"
REASON_MAX = 400


def compose_dir(state_dir: Path, compose_id: str) -> Path:
    return state_dir / "composes" / compose_id


def append_log(state_dir: Path, compose_id: str, line: str) -> None:
    """A line of the service's own in a compose's log (nothing when the compose has no directory)."""
    directory = compose_dir(state_dir, compose_id)
    if not directory.is_dir():
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(directory / LOG_NAME, "a", encoding="utf-8") as f:
        f.write(f"imgbuild-service: {stamp} {line}\n")


def run_build(
    argv: list[str],
    directory: Path,
    env: Mapping[str, str],
    cancel: threading.Event,
    grace: float,
    on_start: Callable[[int], None],
) -> tuple[int, bool]:
    """Run the builder in `directory` (output appended to its compose.log) in a new session; on `cancel`
    stop its whole process group (SIGTERM, SIGKILL after `grace`). (exit status, stopped by cancel)."""
    with open(directory / LOG_NAME, "ab") as log_file:
        with run.spawn(
            argv, stdout=log_file, stderr=run.STDOUT, env=env, cwd=directory, check=False, new_session=True
        ) as proc:
            on_start(proc.pid)
            canceled = _wait(proc, cancel, grace)
            kill_group(proc.pid, signal.SIGKILL)  # anything the builder left in its group
    return proc.returncode, canceled


def _wait(proc: run.Popen[bytes], cancel: threading.Event, grace: float) -> bool:
    """Wait for the builder; on `cancel`, stop its process group. True when it was stopped."""
    while True:
        try:
            proc.wait(timeout=0.2)
            return False
        except run.TimeoutExpired:
            pass
        if cancel.is_set():
            stop_group(proc.pid, grace, proc)
            proc.wait()
            return True


def kill_group(pgid: int, sig: signal.Signals) -> bool:
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


def stop_group(pgid: int, grace: float, leader: run.Popen[bytes] | None = None) -> None:
    """SIGTERM the group, SIGKILL whatever is left after `grace` seconds. `leader` is the group's
    leader when it is our child: it must be reaped, or its zombie keeps the group "alive"."""
    if not kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if leader is not None and leader.poll() is None:
            time.sleep(0.05)
            continue
        if not _probe(pgid):
            return
        time.sleep(0.05)
    kill_group(pgid, signal.SIGKILL)


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
        if text and not text.startswith(("imgbuild-service:", "imgbuild-worker:", "hint:", "{")):
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


def cmdline_names(pid: int, compose_id: str) -> bool:
    try:
        return compose_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
