"""Waking whoever waits for work (local worker threads, remote workers' long polls) when a compose is queued.

In-process, a condition variable. On PostgreSQL also LISTEN/NOTIFY: the store sends NOTIFY inside the
transaction that queues a compose (delivered only if it commits), and a listener thread on its own
connection wakes this process's waiters, so a compose queued by another service on the same database is
picked up at once too. Waiters also wake on a timeout: a lost notification costs latency, never a compose.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import func, select
from sqlalchemy.engine import URL, Connection

log = logging.getLogger(__name__)

CHANNEL = "imgbuild_work"


class Waker:
    def __init__(self, url: URL | None) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._pg_url = url if url is not None and url.get_backend_name() == "postgresql" else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._pg_url is not None and self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def announce(self, conn: Connection) -> None:
        """Inside a transaction that queues work: NOTIFY on PostgreSQL (sent at commit)."""
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_notify(CHANNEL, "")))

    def wake(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Until the next wake-up (one after this call started) or `timeout` seconds."""
        with self._cond:
            seen = self._generation
            self._cond.wait_for(lambda: self._generation != seen or self._stop.is_set(), timeout)

    def _listen(self) -> None:
        import psycopg  # only with PostgreSQL

        assert self._pg_url is not None
        params = self._pg_url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.wake()  # anything queued while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except psycopg.Error as e:
                log.warning("LISTEN %s: %s; listening again in 1 s", CHANNEL, e)
                self._stop.wait(1.0)
