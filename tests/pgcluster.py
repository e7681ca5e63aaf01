"""A throw-away PostgreSQL cluster for the tests: Debian's `postgresql` server binaries, `initdb` in a
temporary directory, `pg_ctl start` on a Unix socket in that directory (no TCP port), trust authentication.

PostgreSQL refuses to run as root: as root, the cluster belongs to and runs as `nobody`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from builder import run

SUPERUSER = "postgres"


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    assert found, "PostgreSQL is not installed: apt-get install postgresql (scripts/debian-packages.txt)"
    return found[-1].parent


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *argv] if os.geteuid() == 0 else argv


@dataclass(frozen=True)
class Cluster:
    directory: Path  # data in ./data, the socket in ./ (short: sun_path has 108 bytes)

    @property
    def socket_dir(self) -> Path:
        return self.directory

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+psycopg", username=SUPERUSER, database=database, query={"host": str(self.directory)}
        )

    def create_database(self) -> URL:
        """A new empty database, for one test."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            host=str(self.directory), user=SUPERUSER, dbname="postgres", autocommit=True
        ) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        pg_ctl = str(_bindir() / "pg_ctl")
        run.run(
            _as_owner([pg_ctl, "-D", str(self.directory / "data"), "-m", "immediate", "stop"]), check=False
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster() -> Cluster:
    bindir = _bindir()
    directory = Path(tempfile.mkdtemp(prefix="imgbuild-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    try:
        data = directory / "data"
        run.run(
            _as_owner(
                [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--no-sync"]
            ),
            timeout=120,
        )
        options = f"-k {directory} -c listen_addresses='' -c fsync=off -c max_connections=300"
        run.run(
            _as_owner(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    f"{directory}/log",
                    "-w",
                    "start",
                ]
            ),
            timeout=120,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return Cluster(directory)
