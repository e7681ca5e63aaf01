"""composer-cli's AWS upload profile through the service, with the stand-in builder: the compose runs the
builder's `ami` command with the profile's region and image name, the credentials reach only that child's
environment (with the service's AWS endpoints, never its own AWS identity), the upload shows in compose
info and the compose lists, no state file or answer holds a secret, and a restart fails a waiting upload.
The same against a real moto server and the example image: tests/integration/test_service_upload_aws.py."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from builder.service.uploads import RESTARTED_REASON, upload_id
from tests.unit.composer_cli import Commands
from tests.unit.test_service_support import ComposerCli, running_service, standin_builder

OK = "oci:/standin/ok"
ACCESS_KEY = "AKIASERVICETESTKEY01"
SECRET = "svc-secret-Zq8x/never-stored"
TOKEN = "svc-session-token-Kp3w/never-stored"
# composer-cli compose start web ami web-ami PROFILE.toml: {"image_name": ...} updated with the profile's TOML
PROFILE: dict[str, Any] = {
    "provider": "aws",
    "settings": {
        "accessKeyID": ACCESS_KEY,
        "secretAccessKey": SECRET,
        "sessionToken": TOKEN,
        "bucket": "composer-images",
        "region": "eu-west-1",
        "key": "web-image-key",
    },
}
BLUEPRINT = 'name = "web"\ndescription = "web"\nversion = "1.0.0"\n'


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _secret_files(state: Path) -> list[str]:
    """Files under the state directory (the database with its -wal/-shm included) holding a secret."""
    return [
        str(path)
        for path in state.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in (SECRET, TOKEN))
    ]


def _tar_bytes(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [tar.extractfile(m) for m in tar.getmembers()]
        return b"".join(m.read() for m in members if m is not None)


def _wait_started(cli: ComposerCli, compose_id: str) -> None:
    """Until the stand-in builder runs (its first line is in the log): the compose keeps the worker busy."""
    deadline = time.monotonic() + 60
    while "started pid=" not in cli.log(compose_id):
        assert time.monotonic() < deadline, cli.log(compose_id)
        time.sleep(0.05)


def test_an_ami_compose_uploads_with_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:10")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATHESERVICESOWN01")  # the service's identity: never lent
    monkeypatch.setenv("AWS_PROFILE", "operator")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    state = tmp_path / "state"
    with running_service(state, builder=standin_builder(tmp_path), default_ref=OK) as (_, cli):
        cc = Commands(cli)
        cc.push(BLUEPRINT)
        started = cc.start("web", "ami", upload={"image_name": "web-ami", **PROFILE})
        compose_id = started["build_id"]
        assert started["upload_id"] == upload_id(compose_id)
        assert cli.wait(compose_id) == "FINISHED", cli.log(compose_id)

        got = json.loads((state / "standin-aws.json").read_text())
        assert got["argv"] == ["--aws-region", "eu-west-1", "--aws-ami-name", "web-ami"]
        assert got["env"] == {
            "AWS_ACCESS_KEY_ID": _sha(ACCESS_KEY),
            "AWS_SECRET_ACCESS_KEY": _sha(SECRET),
            "AWS_SESSION_TOKEN": _sha(TOKEN),
            "AWS_ENDPOINT_URL": _sha("http://127.0.0.1:9"),
            "AWS_ENDPOINT_URL_EC2": _sha("http://127.0.0.1:10"),
            "AWS_CA_BUNDLE": _sha("/etc/ssl/certs/ca-certificates.crt"),
            "AWS_CONFIG_FILE": _sha("/dev/null"),
            "AWS_SHARED_CREDENTIALS_FILE": _sha("/dev/null"),
            "AWS_EC2_METADATA_DISABLED": _sha("true"),
        }

        info = cc.info(compose_id)
        assert info["compose_type"] == "ami" and info["queue_status"] == "FINISHED"
        assert info["uploads"] == [
            {
                "uuid": upload_id(compose_id),
                "status": "FINISHED",
                "provider_name": "aws",
                "image_name": "web-ami",
                "creation_time": info["uploads"][0]["creation_time"],
                "settings": {"region": "eu-west-1", "bucket": "composer-images", "key": "web-image-key"},
                "ami": "ami-0standin",
                "snapshot_id": "snap-0",
                "region": "eu-west-1",
            }
        ]
        assert [e["uploads"] for e in cc.status()] == [info["uploads"]]
        assert {"name": "ami", "enabled": True} in cc.types()["types"]

        answers = [
            cli.get(f"/api/v1/compose/{route}/{compose_id}").body for route in ("info", "log", "status/*")
        ]
        answers += [cli.get(f"/api/v1/compose/{route}").body for route in ("queue", "finished", "failed")]
        answers += [
            _tar_bytes(cli.get(f"/api/v1/compose/{route}/{compose_id}").body)
            for route in ("metadata", "logs", "results")
        ]
        assert b"ami-0standin" in answers[-1]  # the AMI id is in the results' result.json
        assert [a for a in answers if SECRET.encode() in a or TOKEN.encode() in a] == []
        assert _secret_files(state) == []
    assert _secret_files(state) == []


def test_a_waiting_upload_fails_at_restart(tmp_path: Path) -> None:
    state, builder = tmp_path / "state", standin_builder(tmp_path)
    with running_service(state, builder=builder, default_ref=OK, grace=3.0) as (_, cli):
        cc = Commands(cli)
        cc.push(BLUEPRINT)
        cc.push(BLUEPRINT.replace('"web"', '"hang"') + 'container_ref = "oci:/standin/hang"\n')
        hang = cc.start("hang", "qcow2")["build_id"]
        _wait_started(cli, hang)
        waiting = cc.start("web", "ami", upload={"image_name": "web-ami", **PROFILE})["build_id"]
        assert cc.info(waiting)["uploads"][0]["status"] == "WAITING"
        assert _secret_files(state) == []
    with running_service(state, builder=builder, default_ref=OK) as (_, cli):
        info = Commands(cli).info(waiting)
        assert info["queue_status"] == "FAILED" and info["reason"] == RESTARTED_REASON
        assert info["uploads"][0]["status"] == "FAILED"
        assert RESTARTED_REASON in cli.log(waiting)
    assert waiting not in (state / "standin-runs.log").read_text()  # its builder never ran


def test_cancel_forgets_the_credentials(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path), default_ref=OK) as (
        service,
        cli,
    ):
        cc = Commands(cli)
        cc.push(BLUEPRINT)
        cc.push(BLUEPRINT.replace('"web"', '"hang"') + 'container_ref = "oci:/standin/hang"\n')
        hang = cc.start("hang", "qcow2")["build_id"]
        _wait_started(cli, hang)
        waiting = cc.start("web", "ami", upload={"image_name": "web-ami", **PROFILE})["build_id"]
        assert service.queue.holds_upload(waiting)
        assert cli.raw("DELETE", f"/api/v1/compose/cancel/{waiting}").json()["status"] is True
        assert not service.queue.holds_upload(waiting)
        assert cc.info(waiting)["uploads"][0]["status"] == "FAILED"


def test_a_running_upload_shows_running_and_cancels(tmp_path: Path) -> None:
    ref = "oci:/standin/hang-upload"  # the stand-in builds, then hangs in its upload
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path), grace=3.0) as (_, cli):
        cc = Commands(cli)
        cc.push(BLUEPRINT)
        upload = {"image_name": "web-ami", **PROFILE}
        compose_id = cc.start_ostree("web", "ami", url=ref, upload=upload)["build_id"]
        deadline = time.monotonic() + 30
        while cc.info(compose_id)["uploads"][0]["status"] != "RUNNING":
            assert cc.info(compose_id)["queue_status"] in ("WAITING", "RUNNING")
            assert time.monotonic() < deadline, cli.log(compose_id)
            time.sleep(0.1)
        assert cli.raw("DELETE", f"/api/v1/compose/cancel/{compose_id}").json()["status"] is True
        info = cc.info(compose_id)
        assert (info["queue_status"], info["uploads"][0]["status"]) == ("FAILED", "FAILED")
        assert "ami" not in info["uploads"][0]
