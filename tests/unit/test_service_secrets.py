"""Blueprint passwords: hashed before a blueprint is stored, so the plain text is in no answer, no tar, no
file of the state directory (the SQLite database's raw bytes included); and a database written before
that (plain text stored) is hashed at the next start."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from builder.service.bpcodec import encode_toml
from builder.service.queue import BLUEPRINT_NAME, compose_dir
from builder.service.store import ComposeStatus
from tests.unit.composer_cli import Commands
from tests.unit.test_service_support import open_store, running_service, standin_builder

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL

SECRET = "plain-Text-Secret-4711"
BP = f"""name = "sec"
version = "1.0.0"

[[customizations.user]]
name = "alice"
password = "{SECRET}"

[[customizations.user]]
name = "root"
password = "{SECRET}-root"
"""


def _state_bytes(state: Path) -> list[tuple[Path, bytes]]:
    return [(path, path.read_bytes()) for path in sorted(state.rglob("*")) if path.is_file()]


def _assert_nowhere(state: Path, *answers: bytes) -> None:
    for path, data in _state_bytes(state):
        assert SECRET.encode() not in data, path
    for data in answers:
        assert SECRET.encode() not in data
        if data[257:262] == b"ustar":  # a tar: its members too (already covered, uncompressed)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    extracted = tar.extractfile(member)
                    assert extracted is None or SECRET.encode() not in extracted.read()


def test_passwords_are_hashed_before_they_are_stored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_service(state, builder=standin_builder(tmp_path)) as (_, cli):
        cc = Commands(cli)
        assert cc.push(BP) == {"status": True}
        assert cc.push(BP.replace("1.0.0", "1.0.1")) == {"status": True}  # same password: same hash kept
        assert cc.workspace(BP.replace("1.0.0", "1.1.0")) == {"status": True}
        compose_id = cc.start_ostree("sec", "qcow2", url="oci:/standin/ok")["build_id"]
        assert cli.wait(compose_id) == "FINISHED"
        commits = [c["commit"] for c in cc.changes("sec")["blueprints"][0]["changes"]]
        answers = [
            cc.show("sec").body,
            cli.get("/api/v1/blueprints/info/sec").body,
            cc.freeze_toml("sec").body,
            cli.get("/api/v1/blueprints/freeze/sec").body,
            cli.get("/api/v1/blueprints/depsolve/sec").body,
            cli.get(f"/api/v1/blueprints/change/sec/{commits[1]}").body,
            cli.get(f"/api/v1/blueprints/diff/sec/{commits[1]}/WORKSPACE").body,
            cli.get(f"/api/v1/compose/info/{compose_id}").body,
            cc.log(compose_id).body,
            *(cc.download(what, compose_id).body for what in ("logs", "metadata", "results", "image")),
        ]
        shown = cli.get("/api/v1/blueprints/info/sec").json()["blueprints"][0]["customizations"]["user"]
        assert all(user["password"].startswith("$6$") for user in shown)
        diff = cli.get(f"/api/v1/blueprints/diff/sec/{commits[1]}/{commits[0]}").json()["diff"]
        assert diff == [{"old": {"Version": "1.0.0"}, "new": {"Version": "1.0.1"}}]
        _assert_nowhere(state, *answers)
    _assert_nowhere(state)


def test_a_plain_password_stored_before_is_hashed_at_the_next_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = open_store(state)  # what the service stored before it hashed at push time
    plain = {
        "name": "sec",
        "version": "1.0.0",
        "customizations": {"user": [{"name": "alice", "password": SECRET}]},
    }
    old.push_blueprint(plain)
    old.push_workspace({**plain, "version": "1.1.0"})
    old.add_compose(
        "0d6d1ab5-7c39-4d69-9a44-7f1e4b4c8d2e", plain, "qcow2", "oci:/standin/ok", 0, ComposeStatus.FINISHED
    )
    directory = compose_dir(state, "0d6d1ab5-7c39-4d69-9a44-7f1e4b4c8d2e")
    directory.mkdir(parents=True)
    (directory / BLUEPRINT_NAME).write_text(encode_toml(plain))
    old.close_thread_connection()
    assert any(SECRET.encode() in data for _, data in _state_bytes(state))

    with running_service(state) as (service, cli):
        _assert_nowhere(state)
        stored = service.store.committed("sec")
        assert stored is not None and stored["customizations"]["user"][0]["password"].startswith("$6$")
        compose = cli.get("/api/v1/compose/info/0d6d1ab5-7c39-4d69-9a44-7f1e4b4c8d2e").json()
        assert compose["blueprint"]["customizations"]["user"][0]["password"].startswith("$6$")
    _assert_nowhere(state)
