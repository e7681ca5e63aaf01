"""Opening the state database: SQLite in the state directory by default, PostgreSQL from a URL.

SQLite: pysqlite's own transaction handling is switched off (it cannot BEGIN IMMEDIATE); every transaction
is begun here instead, BEGIN IMMEDIATE for writes (`Store.transaction`) and a plain BEGIN for reads, so
two read-modify-writes never interleave and readers never block. WAL, and secure_delete so a replaced row
(a blueprint before its passwords were hashed) is overwritten with zeros, not left in a free page.
PostgreSQL: psycopg 3, READ COMMITTED; claims lock their row (FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from builder.errors import ImgbuildError

IMMEDIATE = "imgbuild_immediate"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)
SCHEMES = ("postgresql", "postgres", "sqlite")


def parse_database(text: str) -> URL:
    """A `--database` URL; postgresql://USER@HOST/DB (psycopg 3 is used) or sqlite:///PATH."""
    try:
        url = make_url(text)
    except ArgumentError:
        url = None
    scheme = url.drivername.split("+")[0] if url is not None else ""
    if url is None or scheme not in SCHEMES:
        raise ImgbuildError(
            "--database wants a URL such as postgresql://USER@HOST/DBNAME or "
            "postgresql:///DBNAME?host=/run/postgresql",
            hint="leave it out to keep the state in SQLite in the state directory",
        )
    if scheme in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url.set(drivername="sqlite+pysqlite")


def describe(url: URL) -> str:
    """The URL without its password, for logs and messages."""
    return url.render_as_string(hide_password=True)


def open_engine(url: URL | None, state_dir: Path) -> Engine:
    if url is None:
        url = URL.create("sqlite+pysqlite", database=str(state_dir / "state.sqlite"))
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url, pool_size=8, max_overflow=64, pool_timeout=120, connect_args={"timeout": 60.0}
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=4, max_overflow=28, pool_timeout=120, pool_pre_ping=True)


def _sqlite_connect(dbapi_connection: Any, record: object) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun in _sqlite_begin, never implicitly
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000", "secure_delete=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":  # VACUUM: outside any transaction
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(IMMEDIATE, False) else "BEGIN")
