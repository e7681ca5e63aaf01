"""Remote workers, server side: claims, heartbeats, the reaper that requeues a lost worker's compose.

A claim is (worker name, run number): `composes.runs` counts the claims of a compose, so a worker whose
compose was requeued and claimed again can neither report on it nor upload into it (its run is old).
A RUNNING compose of a remote worker whose heartbeats stop for `heartbeat_timeout` seconds goes back to
WAITING once (`requeues`); the second time it fails with the reason. Everything is in the database:
a service restart loses nothing, and a starting service gives the running composes' workers a whole
timeout to reach it again before any of them counts as lost (however long the service was down).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from builder.service.queue import CANCELED_REASON, append_log
from builder.service.schema import composes, workers
from builder.service.store import Compose, ComposeStatus, Store

log = logging.getLogger(__name__)

LOST_REASON = "worker {worker} stopped sending heartbeats (last {age:.0f} s ago)"


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    labels: tuple[str, ...]
    first_seen: float
    last_seen: float
    compose: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "labels": list(self.labels),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "compose": self.compose,
        }


def arches(labels: tuple[str, ...]) -> tuple[str, ...]:
    """The architectures a worker's labels offer (`arch:aarch64`)."""
    return tuple(label.split(":", 1)[1] for label in labels if label.startswith("arch:"))


class Farm:
    def __init__(self, store: Store, state_dir: Path, heartbeat_timeout: float) -> None:
        self.store = store
        self.state_dir = state_dir
        self.heartbeat_timeout = heartbeat_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def heartbeat_interval(self) -> float:
        return max(0.2, self.heartbeat_timeout / 4)

    def start(self) -> None:
        c = composes.c
        with self.store.transaction() as conn:
            remote = (c.status == ComposeStatus.RUNNING.value) & c.worker.is_not(None)
            conn.execute(update(composes).where(remote).values(heartbeat=time.time()))
        self._thread = threading.Thread(target=self._reap_loop, name="worker-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- what workers ask

    def seen(self, name: str, labels: tuple[str, ...], compose: str | None) -> None:
        """Record a worker's visit: its labels, the compose it runs."""
        now = time.time()
        values: dict[str, object] = {
            "labels": json.dumps(sorted(labels)),
            "last_seen": now,
            "compose": compose,
        }
        with self.store.transaction() as conn:
            found = conn.execute(update(workers).where(workers.c.name == name).values(**values)).rowcount
            if not found:
                conn.execute(insert(workers).values(name=name, first_seen=now, **values))

    def release(self, name: str) -> None:
        """The worker runs no compose any more."""
        with self.store.transaction() as conn:
            conn.execute(update(workers).where(workers.c.name == name).values(compose=None))

    def claim(self, name: str, labels: tuple[str, ...], wait: float) -> Compose | None:
        """The oldest waiting compose this worker can build, waiting up to `wait` seconds for one."""
        deadline = time.monotonic() + wait
        while True:
            self.seen(name, labels, None)
            compose = self.store.claim_next(arches(labels), name)
            if compose is not None:
                self.seen(name, labels, compose.id)
                append_log(self.state_dir, compose.id, f"claimed by worker {name} (run {compose.runs})")
                return compose
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return None
            self.store.waker.wait(min(remaining, 5.0))

    def heartbeat(self, name: str, labels: tuple[str, ...], compose_id: str, run: int) -> tuple[bool, bool]:
        """(still this worker's claim, cancel requested)."""
        c = composes.c
        mine = (
            (c.id == compose_id)
            & (c.worker == name)
            & (c.runs == run)
            & (c.status == ComposeStatus.RUNNING.value)
        )
        with self.store.transaction() as conn:
            owned = conn.execute(update(composes).where(mine).values(heartbeat=time.time())).rowcount > 0
            cancel = bool(conn.execute(select(c.cancel_requested).where(c.id == compose_id)).scalar())
        self.seen(name, labels, compose_id if owned else None)
        return owned, cancel

    def owns(self, name: str, compose_id: str, run: int) -> bool:
        compose = self.store.compose(compose_id)
        return (
            compose is not None
            and compose.status is ComposeStatus.RUNNING
            and compose.worker == name
            and compose.runs == run
        )

    def workers(self) -> list[WorkerInfo]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(workers).order_by(workers.c.name)).mappings().all()
        return [
            WorkerInfo(
                r["name"], tuple(json.loads(r["labels"])), r["first_seen"], r["last_seen"], r["compose"]
            )
            for r in rows
        ]

    def forget(self, name: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(delete(workers).where(workers.c.name == name))

    # -- lost workers

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            try:
                self.reap()
            except Exception:  # reported, and tried again at the next interval
                log.exception("checking the workers' heartbeats failed")

    def reap(self) -> list[str]:
        """Requeue (once) or fail the composes of workers whose heartbeats stopped; their ids."""
        c = composes.c
        now = time.time()
        stale = (
            (c.status == ComposeStatus.RUNNING.value)
            & c.worker.is_not(None)
            & (c.heartbeat < now - self.heartbeat_timeout)
        )
        changed: list[tuple[str, str]] = []
        with self.store.transaction() as conn:
            rows = conn.execute(select(composes).where(stale).with_for_update(skip_locked=True)).mappings()
            for row in rows.all():
                reason = LOST_REASON.format(worker=row["worker"], age=now - row["heartbeat"])
                where = update(composes).where(c.id == row["id"], c.runs == row["runs"])
                if row["cancel_requested"]:
                    values = {
                        "status": ComposeStatus.FAILED.value,
                        "finished": now,
                        "reason": CANCELED_REASON,
                    }
                    note = f"compose FAILED: {CANCELED_REASON} ({reason})"
                elif row["requeues"] == 0:
                    values = {"status": ComposeStatus.WAITING.value, "requeues": 1, "started": None}
                    note = f"{reason}: requeued"
                else:
                    values = {
                        "status": ComposeStatus.FAILED.value,
                        "finished": now,
                        "reason": f"{reason}; it had been requeued once already",
                    }
                    note = f"compose FAILED: {values['reason']}"
                conn.execute(where.values(worker=None, heartbeat=None, pid=None, **values))
                changed.append((row["id"], note))
            if any(note.endswith("requeued") for _, note in changed):
                self.store.waker.announce(conn)
        for compose_id, note in changed:
            log.warning("compose %s: %s", compose_id, note)
            append_log(self.state_dir, compose_id, note)
        if changed:
            self.store.waker.wake()
        return [compose_id for compose_id, _ in changed]
