"""A real build of the example OS on a remote worker whose service keeps images in S3 (a moto server on
loopback): the worker, with no AWS credentials, uploads the qcow2 through presigned part URLs; the object has
the bytes `compose image` returns, and the compose directory holds no copy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.aws_helpers import MotoServer, moto_server
from tests.imagebuilds import leaked_resources
from tests.unit.test_service_support import EXAMPLE_BLUEPRINT, allowing, log_tail, running_service
from tests.workerfarm import CLIENT_TOKEN, WORKER_TOKEN, free_port, worker_processes

if TYPE_CHECKING:
    from builder.example import ExampleImage

BUCKET = "imgbuild-images"


def _aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)


def test_a_real_build_goes_to_the_object_store(
    example_x86_64: ExampleImage, builder_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    with moto_server() as moto:
        _aws_env(moto, monkeypatch)
        s3 = moto.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        with running_service(
            builder_tmp / "state",
            token=CLIENT_TOKEN,
            worker_token=WORKER_TOKEN,
            workers=0,
            port=port,
            heartbeat_timeout=20.0,
            allow_refs=allowing(example_x86_64.reference),
            object_store=f"s3://{BUCKET}",
        ) as (service, cli):
            assert cli.push(EXAMPLE_BLUEPRINT).json() == {"status": True}
            with worker_processes(builder_tmp, f"http://127.0.0.1:{port}", {"w1": "arch:x86_64"}):
                compose_id = cli.start_ok("example", "qcow2", example_x86_64.reference)
                assert cli.wait(compose_id, timeout=900) == "FINISHED", log_tail(cli, compose_id)
            key = f"{compose_id}/run-1/disk.qcow2"
            head = s3.head_object(Bucket=BUCKET, Key=key)
            digest = hashlib.sha256()
            for chunk in s3.get_object(Bucket=BUCKET, Key=key)["Body"].iter_chunks(1 << 20):
                digest.update(chunk)
            output = service.config.state_dir / "composes" / compose_id / "output"
            assert not (output / "disk.qcow2").exists()
            image = cli.get(f"/api/v1/compose/image/{compose_id}")
            assert image.status == 200 and image.body[:4] == b"QFI\xfb"
            assert int(image.headers["Content-Length"]) == head["ContentLength"] == len(image.body)
            assert hashlib.sha256(image.body).hexdigest() == digest.hexdigest()
            parts = str(head["ETag"]).rsplit("-", 1)[-1].strip('"')
            print(f"qcow2 of {len(image.body)} bytes in the object store, {parts} parts")
            deleted = cli.raw("DELETE", f"/api/v1/compose/delete/{compose_id}", None, None).json()
            assert deleted["errors"] == []
            assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert leaked_resources(builder_tmp) == []
