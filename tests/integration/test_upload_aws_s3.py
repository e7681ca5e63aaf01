"""The S3 + ImportSnapshot path (--aws-bucket): the multipart upload runs for real against moto's S3;
moto has no ImportSnapshot, so the EC2 side is botocore's Stubber, which also checks every EC2 request
imgbuild makes (ImportSnapshot's disk container, RegisterImage's boot mode, ENA, SR-IOV, devices)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from builder.arch import Arch
from builder.errors import UploadError
from builder.progress import Progress, ProgressMode
from builder.upload import s3import
from builder.upload.aws import upload_disk
from builder.upload.created import Created, removed_on_failure
from builder.upload.diskinfo import DiskInfo
from builder.upload.meter import Meter
from builder.upload.preflight import Checked, Method
from builder.upload.session import Clients, make_clients
from builder.upload.settings import AwsSettings
from tests.aws_helpers import REGION, MiB, MotoServer, make_disk, moto_server

BUCKET = "imgbuild-images"
TASK = "import-snap-0123456789abcdef0"
SNAPSHOT = "snap-0123456789abcdef0"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        server.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield server


@pytest.fixture
def clients(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Clients:
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    real = make_clients(AwsSettings(region=REGION, ami_name="unused", bucket=BUCKET))
    # An EC2 client that never reaches a server: every request must be one the test expects.
    ec2 = boto3.client("ec2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    return Clients(ec2=ec2, ebs=real.ebs, s3=real.s3, sts=real.sts, region=REGION)


def _import_request(bucket: str) -> dict[str, Any]:
    container = {
        "Description": "imgbuild upload",
        "Format": "RAW",
        "UserBucket": {"S3Bucket": bucket, "S3Key": ANY},
    }
    return {"Description": "imgbuild upload", "DiskContainer": container, "ClientToken": ANY}


def _task(status: str, **detail: str) -> dict[str, Any]:
    return {
        "ImportSnapshotTasks": [{"ImportTaskId": TASK, "SnapshotTaskDetail": {"Status": status, **detail}}]
    }


def test_multipart_upload_then_import_and_register(
    clients: Clients, moto: MotoServer, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path / "disk.raw", size=80 * MiB + 4096, data=os.urandom(5 * MiB)).path
    settings = AwsSettings(region=REGION, ami_name="imgbuild-s3", bucket=BUCKET, imds_v2_only=True)
    seen: dict[str, Any] = {}

    def inspect_object(params: dict[str, Any], **_: Any) -> None:
        """When ImportSnapshot is asked for, the object must be the whole disk, sent in parts."""
        key = params["DiskContainer"]["UserBucket"]["S3Key"]
        head = clients.s3.head_object(Bucket=BUCKET, Key=key, PartNumber=1)
        body = clients.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        seen.update(key=key, parts=head["PartsCount"], sha256=hashlib.sha256(body).hexdigest())

    clients.ec2.meta.events.register("provide-client-params.ec2.ImportSnapshot", inspect_object)
    register = {
        "Name": "imgbuild-s3",
        "Description": "imgbuild-s3 (imgbuild)",
        "Architecture": "x86_64",
        "BootMode": "uefi-preferred",
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "SriovNetSupport": "simple",
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {
                    "SnapshotId": SNAPSHOT,
                    "VolumeSize": 1,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
        "ImdsSupport": "v2.0",
    }
    with Stubber(clients.ec2) as stub:
        stub.add_response("import_snapshot", {"ImportTaskId": TASK}, _import_request(BUCKET))
        stub.add_response(
            "describe_import_snapshot_tasks", _task("active", Progress="40"), {"ImportTaskIds": [TASK]}
        )
        stub.add_response(
            "describe_import_snapshot_tasks",
            _task("completed", SnapshotId=SNAPSHOT),
            {"ImportTaskIds": [TASK]},
        )
        stub.add_response("register_image", {"ImageId": "ami-0123456789abcdef0"}, register)
        checked = Checked(account="123456789012", method=Method.S3, replaces=())
        result = upload_disk(disk, settings, Progress(ProgressMode.PLAIN), clients=clients, checked=checked)
        stub.assert_no_pending_responses()
    with disk.open("rb") as f:
        assert seen["sha256"] == hashlib.file_digest(f, "sha256").hexdigest()
    assert seen["parts"] == 3  # 80 MiB and a bit in 32 MiB parts
    assert (result.method, result.snapshot_id, result.bytes_sent) == (
        "s3-import",
        SNAPSHOT,
        disk.stat().st_size,
    )
    # The temporary object is gone, and no multipart upload is left open.
    assert clients.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert not clients.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_failed_import_leaves_nothing(clients: Clients, tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.raw", data=os.urandom(MiB))
    with Stubber(clients.ec2) as stub:
        stub.add_response("import_snapshot", {"ImportTaskId": TASK}, _import_request(BUCKET))
        failed = _task("deleted", StatusMessage="ClientError: the service role vmimport does not exist")
        stub.add_response("describe_import_snapshot_tasks", failed, {"ImportTaskIds": [TASK]})
        stub.add_response("cancel_import_task", {}, {"ImportTaskId": TASK})
        created = Created()
        meter = Meter(Progress(ProgressMode.PLAIN), "upload", disk.path.stat().st_size)
        info = DiskInfo(disk.path, disk.path.stat().st_size, Arch.X86_64, True, True)
        with pytest.raises(UploadError, match=r"ImportSnapshot task .* vmimport does not exist"):
            with removed_on_failure(clients, created, Progress(ProgressMode.PLAIN)):
                s3import.upload(
                    clients, info, BUCKET, (), meter, created, Progress(ProgressMode.PLAIN), poll=0
                )
        stub.assert_no_pending_responses()
    assert clients.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert not clients.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
