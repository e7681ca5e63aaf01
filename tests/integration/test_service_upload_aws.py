"""composer-cli's AWS upload through the service, for real: the example image is composed with the exact
request `composer-cli compose start-ostree --url REF example ami IMAGE_NAME PROFILE.toml` sends, built by the
real builder and uploaded to a moto server on loopback (the service's AWS_ENDPOINT_URL points at it). The AMI
must exist with the profile's name, and the profile's secret key and session token must appear in no file
under the state directory (the database with its -wal/-shm), no answer, no service log and no tar. Wrong
credentials fail the compose, before anything is built, with the upload's one-line reason."""

from __future__ import annotations

import io
import json
import logging
import secrets
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.aws_helpers import REGION, moto_server
from tests.imagebuilds import leaked_resources
from tests.unit.composer_cli import Commands
from tests.unit.test_service_support import (
    EXAMPLE_BLUEPRINT,
    ComposerCli,
    UnixConnection,
    allowing,
    log_tail,
    running_service,
)

if TYPE_CHECKING:
    from builder.example import ExampleImage


def _profile(access_key: str, secret: str, token: str | None) -> dict[str, Any]:
    """PROFILE.toml as composer-cli loads it into the request's upload (besides image_name)."""
    settings = {
        "accessKeyID": access_key,
        "secretAccessKey": secret,
        "bucket": "composer-images",
        "region": REGION,
        "key": "example-image",
    }
    if token is not None:
        settings["sessionToken"] = token
    return {"provider": "aws", "settings": settings}


def _contains(path: Path, needles: list[bytes]) -> bool:
    """Whether the file's raw bytes hold a needle, read in chunks (the disk image is 10 GiB)."""
    overlap = max(len(n) for n in needles) - 1
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            window = tail + chunk
            if any(n in window for n in needles):
                return True
            tail = window[-overlap:]
    return False


def _holding(state: Path, *needles: str) -> list[str]:
    """The files under `state` (the database with its -wal/-shm, logs, outputs) holding a needle."""
    wanted = [n.encode() for n in needles]
    return [str(path) for path in state.rglob("*") if path.is_file() and _contains(path, wanted)]


def _results_without_image(cli: ComposerCli, compose_id: str) -> dict[str, bytes]:
    """The members of `compose results` but its image, read as a stream (the raw disk is 10 GiB)."""
    assert cli.socket_path is not None
    conn = UnixConnection(cli.socket_path)
    try:
        conn.request("GET", f"/api/v1/compose/results/{compose_id}")
        response = conn.getresponse()
        assert response.status == 200
        members: dict[str, bytes] = {}
        with tarfile.open(fileobj=response, mode="r|") as tar:
            for member in tar:
                data = tar.extractfile(member)
                if data is not None and not member.name.endswith(".raw"):  # the disk streams past, not kept
                    members[member.name] = data.read()
        assert {f"{compose_id}.json", "logs/osbuild.log"} <= set(members), members.keys()
        return members
    finally:
        conn.close()


def _owned(ec2: Any) -> tuple[set[str], set[str]]:
    """(image ids, snapshot ids) the account owns."""
    images = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    return images, {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def _tar_files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m) for m in tar.getmembers()}
        return {name: f.read() for name, f in files.items() if f is not None}


def test_compose_uploads_the_example_as_an_ami(
    example_x86_64: ExampleImage,
    builder_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret, token = f"secret-{secrets.token_hex(12)}", f"token-{secrets.token_hex(16)}"
    state = builder_tmp / "state"
    with moto_server() as moto:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        with running_service(state, allow_refs=allowing(example_x86_64.reference)) as (_, cli):
            cc = Commands(cli)
            cc.push(EXAMPLE_BLUEPRINT)
            upload = {
                "image_name": "imgbuild-service-example",
                **_profile("AKIASVCUPLOAD0000001", secret, token),
            }
            started = cc.start_ostree("example", "ami", url=example_x86_64.reference, upload=upload)
            compose_id = started["build_id"]
            assert cli.wait(compose_id, timeout=1800) == "FINISHED", log_tail(cli, compose_id)

            info = cc.info(compose_id)
            (shown,) = info["uploads"]
            assert shown["status"] == "FINISHED" and shown["image_name"] == "imgbuild-service-example"
            assert shown["uuid"] == started["upload_id"] and shown["region"] == REGION
            ec2 = moto.client("ec2")
            (image,) = ec2.describe_images(ImageIds=[shown["ami"]])["Images"]
            assert image["Name"] == "imgbuild-service-example"

            metadata = _tar_files(cli.get(f"/api/v1/compose/metadata/{compose_id}").body)
            (recorded,) = json.loads(metadata[f"{compose_id}.json"])["uploads"]
            assert (recorded["image_id"], recorded["region"]) == (shown["ami"], REGION)

            answers = [json.dumps(info).encode(), json.dumps(cc.status()).encode()]
            answers += [cli.get(f"/api/v1/compose/log/{compose_id}").body]
            for route in ("metadata", "logs"):
                answers += _tar_files(cli.get(f"/api/v1/compose/{route}/{compose_id}").body).values()
            answers += _results_without_image(cli, compose_id).values()
            assert [a for a in answers if secret.encode() in a or token.encode() in a] == []
            assert _holding(state, secret, token) == []
        assert _holding(state, secret, token) == []
        assert secret not in caplog.text and token not in caplog.text
    assert leaked_resources(builder_tmp) == []


def test_wrong_credentials_fail_the_compose_with_one_line(
    example_x86_64: ExampleImage, builder_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto checks every request's credentials (IAM enforced from the first request): no such key
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as moto:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        state = builder_tmp / "state"
        with running_service(state, allow_refs=allowing(example_x86_64.reference)) as (_, cli):
            cc = Commands(cli)
            cc.push(EXAMPLE_BLUEPRINT)
            upload = {
                "image_name": "imgbuild-wrong",
                **_profile("AKIAWRONGWRONGWRONG0", "not-the-secret", None),
            }
            compose_id = cc.start_ostree("example", "ami", url=example_x86_64.reference, upload=upload)[
                "build_id"
            ]
            assert cli.wait(compose_id, timeout=300) == "FAILED"
            info = cc.info(compose_id)
            assert info["reason"].startswith(
                "the builder failed (exit 2): AWS rejected the credentials "
                "(sts:GetCallerIdentity: InvalidClientTokenId)"
            ), info["reason"]
            assert "\n" not in info["reason"] and info["uploads"][0]["status"] == "FAILED"
            assert '"event": "stage-start"' not in cli.log(compose_id)  # nothing was built
        assert _holding(state, "not-the-secret") == []
    assert "not-the-secret" not in info["reason"]


def test_cancel_during_the_upload_leaves_nothing_in_aws(
    example_x86_64: ExampleImage, builder_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with moto_server() as moto:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        allow = allowing(example_x86_64.reference)
        ec2 = moto.client("ec2")
        before = _owned(ec2)
        with running_service(builder_tmp / "state", allow_refs=allow, grace=60) as (_, cli):
            cc = Commands(cli)
            cc.push(EXAMPLE_BLUEPRINT)
            upload = {"image_name": "imgbuild-canceled", **_profile("AKIASVCUPLOAD0000002", "s3cr3t", None)}
            compose_id = cc.start_ostree("example", "ami", url=example_x86_64.reference, upload=upload)[
                "build_id"
            ]
            deadline = time.monotonic() + 1800
            while '"what": "upload"' not in cli.log(compose_id):  # the snapshot exists, blocks are going up
                assert cc.info(compose_id)["queue_status"] in ("WAITING", "RUNNING"), log_tail(
                    cli, compose_id
                )
                assert time.monotonic() < deadline, log_tail(cli, compose_id)
                time.sleep(0.1)
            assert cc.info(compose_id)["uploads"][0]["status"] == "RUNNING"
            assert _owned(ec2)[1] > before[1]  # the snapshot being uploaded
            assert cli.raw("DELETE", f"/api/v1/compose/cancel/{compose_id}").json()["status"] is True
            info = cc.info(compose_id)
            assert (info["queue_status"], info["uploads"][0]["status"]) == ("FAILED", "FAILED")
        assert _owned(ec2) == before  # moto's own snapshots only: the partial one was deleted
    assert leaked_resources(builder_tmp) == []
