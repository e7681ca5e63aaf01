"""The service's tables, in SQLAlchemy Core: one definition for SQLite and PostgreSQL.

The SQLite file of earlier versions has the same tables; columns added since are added at start-up
(`add_missing_columns`), so an existing state directory keeps its blueprints and composes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    inspect,
)
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn

metadata = MetaData()

commits = Table(
    "commits",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("commit_id", Text, nullable=False, unique=True),
    Column("message", Text, nullable=False),
    Column("timestamp", Text, nullable=False),
    Column("revision", Integer),
    Column("blueprint", Text, nullable=False),
    Index("commits_by_name", "name", "seq"),
    sqlite_autoincrement=True,
)

blueprints = Table(
    "blueprints",
    metadata,
    Column("name", Text, primary_key=True),
    Column("head", Text, nullable=False),
)

workspace = Table(
    "workspace",
    metadata,
    Column("name", Text, primary_key=True),
    Column("blueprint", Text, nullable=False),
)

composes = Table(
    "composes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("blueprint_name", Text, nullable=False),
    Column("blueprint_version", Text, nullable=False),
    Column("blueprint", Text, nullable=False),
    Column("compose_type", Text, nullable=False),
    Column("container_ref", Text, nullable=False),
    Column("image_size", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("created", Double, nullable=False),
    Column("started", Double),
    Column("finished", Double),
    Column("reason", Text),
    Column("pid", Integer),
    Column("image", Text),
    Column("runs", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Integer, nullable=False, server_default="0"),
    Column("upload", Text),
    # since remote workers: the architecture a compose is for (None: the image's own, any worker),
    # the worker that runs it (None: a local worker), its last heartbeat, how often it was requeued
    Column("arch", Text),
    Column("worker", Text),
    Column("heartbeat", Double),
    Column("requeues", Integer, nullable=False, server_default="0"),
    Index("composes_by_status", "status", "seq"),
    sqlite_autoincrement=True,
)

workers = Table(
    "workers",
    metadata,
    Column("name", Text, primary_key=True),
    Column("labels", Text, nullable=False),  # JSON list
    Column("first_seen", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("compose", Text),  # the compose it runs now
)


def add_missing_columns(conn: Connection) -> None:
    """Add the columns a database from an earlier version lacks (ALTER TABLE ... ADD COLUMN)."""
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                # CreateColumn renders the column's definition in the dialect (type, default, NOT NULL)
                definition = CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {definition}")
