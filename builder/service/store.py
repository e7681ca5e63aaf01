"""The service's state in SQLite: blueprints with their change history, workspace copies, tags, composes.

One connection per thread (SQLite connections must not be shared across threads), WAL so readers never
wait for the writer, and every read-modify-write inside BEGIN IMMEDIATE so two pushes of one blueprint or
two workers claiming a compose serialise on the database lock instead of racing.
"""

from __future__ import annotations

import enum
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.service.weldr import next_version

BlueprintDoc = dict[str, Any]  # a blueprint as parsed from TOML/JSON: the service stores it opaquely

STATE_DB = "state.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS commits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    commit_id TEXT NOT NULL UNIQUE,
    message TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    revision INTEGER,
    blueprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commits_by_name ON commits (name, seq);
CREATE TABLE IF NOT EXISTS blueprints (name TEXT PRIMARY KEY, head TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workspace (name TEXT PRIMARY KEY, blueprint TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS composes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    blueprint_name TEXT NOT NULL,
    blueprint_version TEXT NOT NULL,
    blueprint TEXT NOT NULL,
    compose_type TEXT NOT NULL,
    container_ref TEXT NOT NULL,
    image_size INTEGER NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    reason TEXT,
    pid INTEGER,
    image TEXT,
    runs INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    upload TEXT
);
CREATE INDEX IF NOT EXISTS composes_by_status ON composes (status, seq);
"""


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
    runs: int  # how many times a worker claimed it: 1 at most, by construction
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


def _compose(row: sqlite3.Row) -> Compose:
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
        upload=json.loads(row["upload"]) if row["upload"] else None,
    )


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_DB
        self._local = threading.local()
        # private: blueprints carry password hashes and keys, logs may carry more
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = self._db()
        db.executescript(SCHEMA)
        columns = {row["name"] for row in db.execute("PRAGMA table_info(composes)")}
        if "upload" not in columns:  # a database from before uploads
            db.execute("ALTER TABLE composes ADD COLUMN upload TEXT")

    # -- connections and transactions

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), never implicit.
            db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=True)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=60000")
            # a replaced or deleted row (a blueprint before its passwords were hashed) is overwritten
            # with zeros, not left readable in a free page of the file
            db.execute("PRAGMA secure_delete=ON")
            self._local.db = db
        return db

    def close_thread_connection(self) -> None:
        """Close this thread's connection (request threads end; their connections must not leak)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- blueprints

    def push_blueprint(self, doc: BlueprintDoc, message: str | None = None) -> BlueprintDoc:
        """Commit a blueprint (bumping its version as Image Builder does) and clear its workspace copy.

        Returns the blueprint as saved. `message` overrides "Recipe NAME, version V saved." (undo).
        """
        name = str(doc["name"])
        with self.transaction() as db:
            head = self._head(db, name)
            stored = str(head.get("version", "")) if head is not None else None
            saved = dict(doc)
            saved["version"] = next_version(str(doc.get("version") or ""), stored)
            commit = secrets.token_hex(20)
            db.execute(
                "INSERT INTO commits (name, commit_id, message, timestamp, blueprint) VALUES (?, ?, ?, ?, ?)",
                (
                    name,
                    commit,
                    message or f"Recipe {name}, version {saved['version']} saved.",
                    _timestamp(),
                    json.dumps(saved, sort_keys=True),
                ),
            )
            db.execute("INSERT OR REPLACE INTO blueprints (name, head) VALUES (?, ?)", (name, commit))
            db.execute("DELETE FROM workspace WHERE name = ?", (name,))
        return saved

    @staticmethod
    def _head(db: sqlite3.Connection, name: str) -> BlueprintDoc | None:
        row = db.execute(
            "SELECT c.blueprint FROM blueprints b JOIN commits c ON c.commit_id = b.head WHERE b.name = ?",
            (name,),
        ).fetchone()
        return None if row is None else dict(json.loads(row["blueprint"]))

    def committed(self, name: str) -> BlueprintDoc | None:
        return self._head(self._db(), name)

    def push_workspace(self, doc: BlueprintDoc) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO workspace (name, blueprint) VALUES (?, ?)",
                (str(doc["name"]), json.dumps(doc, sort_keys=True)),
            )

    def workspace(self, name: str) -> BlueprintDoc | None:
        row = self._db().execute("SELECT blueprint FROM workspace WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(json.loads(row["blueprint"]))

    def delete_workspace(self, name: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM workspace WHERE name = ?", (name,)).rowcount > 0

    def current(self, name: str) -> tuple[BlueprintDoc, bool] | None:
        """The workspace copy if there is one (changed=True), else the committed blueprint."""
        work = self.workspace(name)
        if work is not None:
            return work, True
        head = self.committed(name)
        return None if head is None else (head, False)

    def delete_blueprint(self, name: str) -> bool:
        with self.transaction() as db:
            found = db.execute("DELETE FROM blueprints WHERE name = ?", (name,)).rowcount > 0
            found = db.execute("DELETE FROM workspace WHERE name = ?", (name,)).rowcount > 0 or found
            db.execute("DELETE FROM commits WHERE name = ?", (name,))
        return found

    def list_blueprints(self) -> list[str]:
        rows = self._db().execute("SELECT name FROM blueprints ORDER BY name").fetchall()
        return [row["name"] for row in rows]

    def changes(self, name: str) -> list[Change]:
        """The blueprint's commits, newest first."""
        rows = self._db().execute(
            "SELECT commit_id, message, revision, timestamp FROM commits WHERE name = ? ORDER BY seq DESC",
            (name,),
        )
        return [Change(r["commit_id"], r["message"], r["revision"], r["timestamp"]) for r in rows]

    def at_commit(self, name: str, commit: str) -> BlueprintDoc | None:
        row = (
            self._db()
            .execute("SELECT blueprint FROM commits WHERE name = ? AND commit_id = ?", (name, commit))
            .fetchone()
        )
        return None if row is None else dict(json.loads(row["blueprint"]))

    def tag(self, name: str) -> bool:
        """Give the newest commit the next revision number (a no-op when it already has one)."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT b.head, c.revision FROM blueprints b JOIN commits c ON c.commit_id = b.head "
                "WHERE b.name = ?",
                (name,),
            ).fetchone()
            if row is None:
                return False
            if row["revision"] is None:
                top = db.execute("SELECT MAX(revision) FROM commits WHERE name = ?", (name,)).fetchone()[0]
                db.execute(
                    "UPDATE commits SET revision = ? WHERE commit_id = ?", ((top or 0) + 1, row["head"])
                )
        return True

    def rewrite_blueprints(self, transform: Callable[[BlueprintDoc], BlueprintDoc | None]) -> int:
        """Replace every stored blueprint (history, workspace, composes) for which `transform` returns a
        new document, in one transaction; then rewrite the database file, so no page keeps the old text.
        Returns how many were replaced."""
        replaced = 0
        with self.transaction() as db:
            for table, key in (("commits", "commit_id"), ("workspace", "name"), ("composes", "id")):
                for row in db.execute(f"SELECT {key}, blueprint FROM {table}").fetchall():
                    new = transform(json.loads(row["blueprint"]))
                    if new is not None:
                        db.execute(
                            f"UPDATE {table} SET blueprint = ? WHERE {key} = ?",
                            (json.dumps(new, sort_keys=True), row[key]),
                        )
                        replaced += 1
        if replaced:
            db = self._db()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
    ) -> None:
        """Record a compose. `upload` is the upload's public part (uploads.AwsUpload.public()): a
        credential is never stored."""
        now = time.time()
        done = status in (ComposeStatus.FINISHED, ComposeStatus.FAILED)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO composes (id, blueprint_name, blueprint_version, blueprint, compose_type, "
                "container_ref, image_size, status, created, started, finished, reason, upload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    compose_id,
                    str(blueprint["name"]),
                    str(blueprint.get("version", "")),
                    json.dumps(blueprint, sort_keys=True),
                    compose_type,
                    container_ref,
                    image_size,
                    status.value,
                    now,
                    now if done else None,
                    now if done else None,
                    reason,
                    None if upload is None else json.dumps(upload, sort_keys=True),
                ),
            )

    def compose(self, compose_id: str) -> Compose | None:
        row = self._db().execute("SELECT * FROM composes WHERE id = ?", (compose_id,)).fetchone()
        return None if row is None else _compose(row)

    def composes(self, *statuses: ComposeStatus) -> list[Compose]:
        """Composes in queue order, only those in `statuses` when given."""
        if statuses:
            marks = ",".join("?" for _ in statuses)
            rows = self._db().execute(
                f"SELECT * FROM composes WHERE status IN ({marks}) ORDER BY seq", [s.value for s in statuses]
            )
        else:
            rows = self._db().execute("SELECT * FROM composes ORDER BY seq")
        return [_compose(row) for row in rows]

    def claim_next(self) -> Compose | None:
        """Atomically move the oldest WAITING compose to RUNNING and return it (None when none waits)."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT id FROM composes WHERE status = ? ORDER BY seq LIMIT 1", (ComposeStatus.WAITING,)
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE composes SET status = ?, started = ?, runs = runs + 1 WHERE id = ? AND status = ?",
                (ComposeStatus.RUNNING, time.time(), row["id"], ComposeStatus.WAITING),
            )
            claimed = db.execute("SELECT * FROM composes WHERE id = ?", (row["id"],)).fetchone()
        return _compose(claimed)

    def set_pid(self, compose_id: str, pid: int | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE composes SET pid = ? WHERE id = ?", (pid, compose_id))

    def finish(self, compose_id: str, status: ComposeStatus, reason: str | None, image: str | None) -> bool:
        """End a RUNNING compose (FINISHED or FAILED); False when it was not running."""
        with self.transaction() as db:
            return (
                db.execute(
                    "UPDATE composes SET status = ?, finished = ?, reason = ?, image = ?, pid = NULL "
                    "WHERE id = ? AND status = ?",
                    (status, time.time(), reason, image, compose_id, ComposeStatus.RUNNING),
                ).rowcount
                > 0
            )

    def cancel_waiting(self, compose_id: str, reason: str) -> bool:
        with self.transaction() as db:
            now = time.time()
            return (
                db.execute(
                    "UPDATE composes SET status = ?, started = ?, finished = ?, reason = ? "
                    "WHERE id = ? AND status = ?",
                    (ComposeStatus.FAILED, now, now, reason, compose_id, ComposeStatus.WAITING),
                ).rowcount
                > 0
            )

    def request_cancel(self, compose_id: str) -> bool:
        """Flag a RUNNING compose for its worker to stop (False when it is not running)."""
        with self.transaction() as db:
            return (
                db.execute(
                    "UPDATE composes SET cancel_requested = 1 WHERE id = ? AND status = ?",
                    (compose_id, ComposeStatus.RUNNING),
                ).rowcount
                > 0
            )

    def cancel_requested(self, compose_id: str) -> bool:
        row = (
            self._db().execute("SELECT cancel_requested FROM composes WHERE id = ?", (compose_id,)).fetchone()
        )
        return bool(row and row[0])

    def fail_running(self, reason: str) -> list[Compose]:
        """Mark every RUNNING compose FAILED (after a restart); returns them as they were."""
        with self.transaction() as db:
            rows = db.execute("SELECT * FROM composes WHERE status = ?", (ComposeStatus.RUNNING,)).fetchall()
            db.execute(
                "UPDATE composes SET status = ?, finished = ?, reason = ?, pid = NULL WHERE status = ?",
                (ComposeStatus.FAILED, time.time(), reason, ComposeStatus.RUNNING),
            )
        return [_compose(row) for row in rows]

    def delete_compose(self, compose_id: str) -> bool:
        """Forget a FINISHED or FAILED compose; False when it is in another state."""
        with self.transaction() as db:
            return (
                db.execute(
                    "DELETE FROM composes WHERE id = ? AND status IN (?, ?)",
                    (compose_id, ComposeStatus.FINISHED, ComposeStatus.FAILED),
                ).rowcount
                > 0
            )
