"""The service's state: blueprints with their change history, workspace copies, tags, composes, workers.

In SQLite (the default, `state.sqlite` in the state directory) or PostgreSQL (`serve --database
postgresql://...`), through SQLAlchemy Core: one set of statements for both (schema.py), the engine's own
locking for the queue. SQLite: WAL so readers never wait for the writer, every write transaction BEGIN
IMMEDIATE so two pushes of one blueprint or two workers claiming a compose serialise on the database lock.
PostgreSQL: a claim takes the oldest waiting compose with SELECT ... FOR UPDATE SKIP LOCKED, so claims by
many workers (and many services on one database) never wait for each other and never take one compose twice;
a new compose is announced with NOTIFY (dbwake.py).
"""

from __future__ import annotations

import enum
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import URL, Connection, Engine, RowMapping
from sqlalchemy.exc import DBAPIError

from builder.errors import ImgbuildError
from builder.service import schema
from builder.service.dbengine import IMMEDIATE, describe, open_engine
from builder.service.dbwake import Waker
from builder.service.schema import commits, composes, workspace
from builder.service.weldr import next_version

BlueprintDoc = dict[str, Any]  # a blueprint as parsed from TOML/JSON: the service stores it opaquely

STATE_DB = "state.sqlite"


class ComposeStatus(enum.StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Change:
    commit: str
    message: str
    revision: int | None
    timestamp: str

    def to_json(self) -> dict[str, object]:
        return {
            "commit": self.commit,
            "message": self.message,
            "revision": self.revision,
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class Compose:
    id: str
    blueprint_name: str
    blueprint_version: str
    blueprint: BlueprintDoc
    compose_type: str
    container_ref: str
    image_size: int
    status: ComposeStatus
    created: float
    started: float | None
    finished: float | None
    reason: str | None
    pid: int | None
    image: str | None  # the image's file name inside the compose's output directory
    runs: int  # how many times a worker claimed it: 1, or 2 after a requeue (a remote worker was lost)
    arch: str | None = None  # the architecture asked for (None: the image's own)
    worker: str | None = None  # the remote worker running it (None: local, or not running)
    heartbeat: float | None = None
    requeues: int = 0
    upload: dict[str, str] | None = None  # the upload's public part (uploads.AwsUpload.public())

    def entry(self) -> dict[str, object]:
        """The compose entry E of queue/finished/failed/status (weldr/compose.go)."""
        entry: dict[str, object] = {
            "id": self.id,
            "blueprint": self.blueprint_name,
            "version": self.blueprint_version,
            "compose_type": self.compose_type,
            "image_size": self.image_size,
            "queue_status": self.status.value,
            "job_created": self.created,
        }
        if self.started is not None:
            entry["job_started"] = self.started
        if self.finished is not None:
            entry["job_finished"] = self.finished
        return entry


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _compose(row: RowMapping) -> Compose:
    return Compose(
        id=row["id"],
        blueprint_name=row["blueprint_name"],
        blueprint_version=row["blueprint_version"],
        blueprint=json.loads(row["blueprint"]),
        compose_type=row["compose_type"],
        container_ref=row["container_ref"],
        image_size=row["image_size"],
        status=ComposeStatus(row["status"]),
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        reason=row["reason"],
        pid=row["pid"],
        image=row["image"],
        runs=row["runs"],
        arch=row["arch"],
        worker=row["worker"],
        heartbeat=row["heartbeat"],
        requeues=row["requeues"],
        upload=json.loads(row["upload"]) if row["upload"] else None,
    )


WAITING_ONLY = (ComposeStatus.WAITING,)
ENDED = (ComposeStatus.FINISHED, ComposeStatus.FAILED)


class Store:
    def __init__(self, state_dir: Path, database: URL | None = None) -> None:
        self.state_dir = state_dir
        self.url = database
        # private: blueprints carry password hashes and keys, logs may carry more
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.engine: Engine = open_engine(database, state_dir)
        self._writer = self.engine.execution_options(**{IMMEDIATE: True})
        self.waker = Waker(database)
        try:
            with self.transaction() as conn:
                schema.metadata.create_all(conn)
                schema.add_missing_columns(conn)
        except DBAPIError as e:
            self.engine.dispose()
            where = "the state database" if database is None else describe(database)
            raise ImgbuildError(
                f"cannot open {where}: {str(e.orig).strip().splitlines()[0] if e.orig else e}",
                hint="check --database (and that PostgreSQL runs and lets this user in)",
            ) from None
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    # -- connections and transactions

    def close(self) -> None:
        self.waker.stop()
        self.engine.dispose()

    def close_thread_connection(self) -> None:
        """Nothing to do: connections come from the engine's pool and go back to it after each use
        (kept for the callers that ran on one SQLite connection per thread)."""

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE); committed on leaving, rolled back on error."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # -- blueprints

    def push_blueprint(self, doc: BlueprintDoc, message: str | None = None) -> BlueprintDoc:
        """Commit a blueprint (bumping its version as Image Builder does) and clear its workspace copy.

        Returns the blueprint as saved. `message` overrides "Recipe NAME, version V saved." (undo).
        """
        name = str(doc["name"])
        with self.transaction() as conn:
            if conn.dialect.name == "postgresql":  # two pushes of one name serialise here
                conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))
            head = self._head(conn, name)
            stored = str(head.get("version", "")) if head is not None else None
            saved = dict(doc)
            saved["version"] = next_version(str(doc.get("version") or ""), stored)
            commit = secrets.token_hex(20)
            conn.execute(
                insert(commits).values(
                    name=name,
                    commit_id=commit,
                    message=message or f"Recipe {name}, version {saved['version']} saved.",
                    timestamp=_timestamp(),
                    blueprint=json.dumps(saved, sort_keys=True),
                )
            )
            conn.execute(delete(schema.blueprints).where(schema.blueprints.c.name == name))
            conn.execute(insert(schema.blueprints).values(name=name, head=commit))
            conn.execute(delete(workspace).where(workspace.c.name == name))
        return saved

    @staticmethod
    def _head(conn: Connection, name: str) -> BlueprintDoc | None:
        bp = schema.blueprints
        text = conn.execute(
            select(commits.c.blueprint)
            .select_from(bp.join(commits, commits.c.commit_id == bp.c.head))
            .where(bp.c.name == name)
        ).scalar()
        return None if text is None else dict(json.loads(text))

    def committed(self, name: str) -> BlueprintDoc | None:
        with self._read() as conn:
            return self._head(conn, name)

    def push_workspace(self, doc: BlueprintDoc) -> None:
        name = str(doc["name"])
        with self.transaction() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))
            conn.execute(delete(workspace).where(workspace.c.name == name))
            conn.execute(insert(workspace).values(name=name, blueprint=json.dumps(doc, sort_keys=True)))

    def workspace(self, name: str) -> BlueprintDoc | None:
        with self._read() as conn:
            text = conn.execute(select(workspace.c.blueprint).where(workspace.c.name == name)).scalar()
        return None if text is None else dict(json.loads(text))

    def delete_workspace(self, name: str) -> bool:
        with self.transaction() as conn:
            return conn.execute(delete(workspace).where(workspace.c.name == name)).rowcount > 0

    def current(self, name: str) -> tuple[BlueprintDoc, bool] | None:
        """The workspace copy if there is one (changed=True), else the committed blueprint."""
        work = self.workspace(name)
        if work is not None:
            return work, True
        head = self.committed(name)
        return None if head is None else (head, False)

    def delete_blueprint(self, name: str) -> bool:
        with self.transaction() as conn:
            found = conn.execute(delete(schema.blueprints).where(schema.blueprints.c.name == name)).rowcount
            found += conn.execute(delete(workspace).where(workspace.c.name == name)).rowcount
            conn.execute(delete(commits).where(commits.c.name == name))
        return found > 0

    def list_blueprints(self) -> list[str]:
        with self._read() as conn:
            names = conn.execute(select(schema.blueprints.c.name).order_by(schema.blueprints.c.name))
            return [str(name) for name in names.scalars()]

    def changes(self, name: str) -> list[Change]:
        """The blueprint's commits, newest first."""
        c = commits.c
        with self._read() as conn:
            rows = conn.execute(
                select(c.commit_id, c.message, c.revision, c.timestamp)
                .where(c.name == name)
                .order_by(c.seq.desc())
            ).all()
        return [Change(r.commit_id, r.message, r.revision, r.timestamp) for r in rows]

    def at_commit(self, name: str, commit: str) -> BlueprintDoc | None:
        with self._read() as conn:
            text = conn.execute(
                select(commits.c.blueprint).where(commits.c.name == name, commits.c.commit_id == commit)
            ).scalar()
        return None if text is None else dict(json.loads(text))

    def tag(self, name: str) -> bool:
        """Give the newest commit the next revision number (a no-op when it already has one)."""
        bp = schema.blueprints
        with self.transaction() as conn:
            row = conn.execute(
                select(bp.c.head, commits.c.revision)
                .select_from(bp.join(commits, commits.c.commit_id == bp.c.head))
                .where(bp.c.name == name)
                .with_for_update()
            ).first()
            if row is None:
                return False
            if row.revision is None:
                top = conn.execute(
                    select(func.max(commits.c.revision)).where(commits.c.name == name)
                ).scalar()
                conn.execute(
                    update(commits).where(commits.c.commit_id == row.head).values(revision=(top or 0) + 1)
                )
        return True

    def rewrite_blueprints(self, transform: Callable[[BlueprintDoc], BlueprintDoc | None]) -> int:
        """Replace every stored blueprint (history, workspace, composes) for which `transform` returns a
        new document, in one transaction; then rewrite the tables' files, so no page keeps the old text.
        Returns how many were replaced."""
        replaced = 0
        with self.transaction() as conn:
            for table, key in ((commits, "commit_id"), (workspace, "name"), (composes, "id")):
                for row in conn.execute(select(table.c[key], table.c.blueprint)).all():
                    new = transform(json.loads(row.blueprint))
                    if new is not None:
                        conn.execute(
                            update(table)
                            .where(table.c[key] == row[0])
                            .values(blueprint=json.dumps(new, sort_keys=True))
                        )
                        replaced += 1
        if replaced:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                if self.is_postgresql:
                    conn.exec_driver_sql("VACUUM FULL commits, workspace, composes")
                else:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                    conn.exec_driver_sql("VACUUM")
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return replaced

    # -- composes

    def add_compose(
        self,
        compose_id: str,
        blueprint: BlueprintDoc,
        compose_type: str,
        container_ref: str,
        image_size: int,
        status: ComposeStatus = ComposeStatus.WAITING,
        reason: str | None = None,
        upload: dict[str, str] | None = None,
        arch: str | None = None,
    ) -> None:
        """Record a compose. `upload` is the upload's public part (uploads.AwsUpload.public()): a
        credential is never stored."""
        now = time.time()
        done = status in ENDED
        with self.transaction() as conn:
            conn.execute(
                insert(composes).values(
                    id=compose_id,
                    blueprint_name=str(blueprint["name"]),
                    blueprint_version=str(blueprint.get("version", "")),
                    blueprint=json.dumps(blueprint, sort_keys=True),
                    compose_type=compose_type,
                    container_ref=container_ref,
                    image_size=image_size,
                    status=status.value,
                    created=now,
                    started=now if done else None,
                    finished=now if done else None,
                    reason=reason,
                    upload=None if upload is None else json.dumps(upload, sort_keys=True),
                    arch=arch,
                )
            )
            if not done:
                self.waker.announce(conn)
        if not done:
            self.waker.wake()

    def compose(self, compose_id: str) -> Compose | None:
        with self._read() as conn:
            row = conn.execute(select(composes).where(composes.c.id == compose_id)).mappings().first()
        return None if row is None else _compose(row)

    def composes(self, *statuses: ComposeStatus) -> list[Compose]:
        """Composes in queue order, only those in `statuses` when given."""
        query = select(composes).order_by(composes.c.seq)
        if statuses:
            query = query.where(composes.c.status.in_([s.value for s in statuses]))
        with self._read() as conn:
            return [_compose(row) for row in conn.execute(query).mappings().all()]

    def claim_next(self, arches: tuple[str, ...] | None = None, worker: str | None = None) -> Compose | None:
        """Atomically move the oldest WAITING compose that is for one of `arches` (or for no particular
        architecture; None: any) to RUNNING and return it (None when none waits). `worker`: the remote
        worker taking it (None: a local worker thread)."""
        c = composes.c
        query = select(c.id).where(c.status == ComposeStatus.WAITING.value)
        if arches is not None:
            query = query.where(c.arch.is_(None) | c.arch.in_(arches))
        if worker is not None:  # an upload's credentials are only in this service's memory: built here
            query = query.where(c.upload.is_(None))
        # PostgreSQL: a row another claim holds is skipped, not waited for; SQLite renders no FOR UPDATE
        # (its BEGIN IMMEDIATE already makes this transaction the only writer)
        query = query.order_by(c.seq).limit(1).with_for_update(skip_locked=True)
        now = time.time()
        with self.transaction() as conn:
            compose_id = conn.execute(query).scalar()
            if compose_id is None:
                return None
            conn.execute(
                update(composes)
                .where(c.id == compose_id, c.status == ComposeStatus.WAITING.value)
                .values(
                    status=ComposeStatus.RUNNING.value,
                    started=now,
                    runs=c.runs + 1,
                    worker=worker,
                    heartbeat=now if worker is not None else None,
                )
            )
            row = conn.execute(select(composes).where(c.id == compose_id)).mappings().one()
        return _compose(row)

    def set_pid(self, compose_id: str, pid: int | None) -> None:
        with self.transaction() as conn:
            conn.execute(update(composes).where(composes.c.id == compose_id).values(pid=pid))

    def finish(
        self,
        compose_id: str,
        status: ComposeStatus,
        reason: str | None,
        image: str | None,
        worker: str | None = None,
        run: int | None = None,
    ) -> bool:
        """End a RUNNING compose (FINISHED or FAILED); False when it was not running (or, with `worker`
        and `run`, when that worker's claim is not the current one: it was requeued meanwhile)."""
        c = composes.c
        query = update(composes).where(c.id == compose_id, c.status == ComposeStatus.RUNNING.value)
        if worker is not None:
            query = query.where(c.worker == worker, c.runs == run)
        values = {"status": status.value, "finished": time.time(), "reason": reason, "image": image}
        with self.transaction() as conn:
            return conn.execute(query.values(pid=None, **values)).rowcount > 0

    def cancel_waiting(self, compose_id: str, reason: str) -> bool:
        now = time.time()
        c = composes.c
        with self.transaction() as conn:
            return (
                conn.execute(
                    update(composes)
                    .where(c.id == compose_id, c.status == ComposeStatus.WAITING.value)
                    .values(status=ComposeStatus.FAILED.value, started=now, finished=now, reason=reason)
                ).rowcount
                > 0
            )

    def request_cancel(self, compose_id: str) -> bool:
        """Flag a RUNNING compose for its worker to stop (False when it is not running)."""
        c = composes.c
        with self.transaction() as conn:
            return (
                conn.execute(
                    update(composes)
                    .where(c.id == compose_id, c.status == ComposeStatus.RUNNING.value)
                    .values(cancel_requested=1)
                ).rowcount
                > 0
            )

    def cancel_requested(self, compose_id: str) -> bool:
        with self._read() as conn:
            flag = conn.execute(
                select(composes.c.cancel_requested).where(composes.c.id == compose_id)
            ).scalar()
        return bool(flag)

    def fail_running(self, reason: str) -> list[Compose]:
        """Mark every RUNNING compose of a local worker FAILED (after a restart); returns them as they were.
        A remote worker's compose goes on: its worker reports back, or its heartbeats stop."""
        c = composes.c
        running = (c.status == ComposeStatus.RUNNING.value) & c.worker.is_(None)
        with self.transaction() as conn:
            rows = conn.execute(select(composes).where(running).with_for_update()).mappings().all()
            conn.execute(
                update(composes)
                .where(running)
                .values(status=ComposeStatus.FAILED.value, finished=time.time(), reason=reason, pid=None)
            )
        return [_compose(row) for row in rows]

    def delete_compose(self, compose_id: str) -> bool:
        """Forget a FINISHED or FAILED compose; False when it is in another state."""
        c = composes.c
        with self.transaction() as conn:
            return (
                conn.execute(
                    delete(composes).where(c.id == compose_id, c.status.in_([s.value for s in ENDED]))
                ).rowcount
                > 0
            )
