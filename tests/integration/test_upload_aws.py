"""`imgbuild upload aws` and `imgbuild ami` against moto in server mode (real HTTP, on loopback)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from builder import run
from builder.errors import UploadError
from builder.example import ExampleImage
from builder.progress import Progress, ProgressMode
from builder.upload.aws import upload_disk
from builder.upload.session import make_clients
from builder.upload.settings import AwsSettings
from tests.aws_helpers import (
    FAKE_CREDENTIALS,
    REGION,
    MiB,
    MotoServer,
    make_disk,
    moto_server,
    nonzero_blocks,
    snapshot_blocks,
)
from tests.imagebuilds import imgbuild

SHARE = "111122223333"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    return moto


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _upload(moto: MotoServer, disk: Path, name: str, *extra: str, check: bool = True) -> run.Completed:
    args: list[str | os.PathLike[str]] = [
        "upload",
        "aws",
        disk,
        "--aws-region",
        REGION,
        "--aws-ami-name",
        name,
        "--progress",
        "json",
        *extra,
    ]
    return imgbuild(args, env=moto.env(), check=check, timeout=300)


def _image(moto: MotoServer, image_id: str) -> dict[str, Any]:
    images = moto.client("ec2").describe_images(ImageIds=[image_id])["Images"]
    assert len(images) == 1
    return dict(images[0])


def test_upload_sends_the_nonzero_blocks_and_registers_a_tagged_shared_ami(
    moto: MotoServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB + 12345)
    disk = make_disk(tmp_path / "disk.raw", data=data, explicit_zeros=2 * MiB).path
    done = _upload(
        moto, disk, "imgbuild-test-one", "--aws-tag", "team=os", "--aws-tag", "build=42", "--aws-share", SHARE
    )
    events = _events(done.out)
    record = next(e for e in events if e["event"] == "upload-end")["result"]
    assert any(e["event"] == "transfer" for e in events)
    assert record["region"] == REGION and record["method"] == "ebs-direct"
    assert (record["arch"], record["boot_mode"]) == ("x86_64", "uefi-preferred")

    expected = nonzero_blocks(disk)
    # The explicitly written zeros are not sent: fewer blocks than the data extents cover.
    assert record["bytes_sent"] == len(expected) * 512 * 1024 < record["disk_size"]
    assert snapshot_blocks(moto.client("ebs"), record["snapshot_id"]) == expected

    image = _image(moto, record["image_id"])
    assert image["Name"] == "imgbuild-test-one"
    assert {t["Key"]: t["Value"] for t in image["Tags"]} == {"team": "os", "build": "42"}
    ec2 = moto.client("ec2")
    snapshot = ec2.describe_snapshots(SnapshotIds=[record["snapshot_id"]])["Snapshots"][0]
    assert {t["Key"]: t["Value"] for t in snapshot["Tags"]} == {"team": "os", "build": "42"}
    launch = ec2.describe_image_attribute(ImageId=record["image_id"], Attribute="launchPermission")
    assert launch["LaunchPermissions"] == [{"UserId": SHARE}]
    assert "AKIA" not in done.out + done.stderr.decode() and "secret" not in done.out + done.stderr.decode()


def test_debug_log_holds_no_secret(moto: MotoServer, tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.raw", data=b"debug" * 1000).path
    token = "imgbuild-session-token-value"
    args: list[str | os.PathLike[str]] = [
        "--debug",
        "upload",
        "aws",
        disk,
        "--aws-region",
        REGION,
        "--aws-ami-name",
        "imgbuild-debug",
    ]
    done = imgbuild(args, env=moto.env(AWS_SESSION_TOKEN=token))
    output = done.out + done.stderr.decode()
    assert "DEBUG" in output  # imgbuild's own debug log is on
    for secret in (FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], token, "Authorization"):
        assert secret not in output


def test_existing_name_is_refused_unless_replace(moto: MotoServer, tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.raw", data=b"first" * 1000).path
    first = _events(_upload(moto, disk, "imgbuild-test-replace").out)[-1]["result"]
    refused = _upload(moto, disk, "imgbuild-test-replace", check=False)
    assert refused.returncode == 2
    lines = refused.stderr.decode().strip().splitlines()
    name, image = "'imgbuild-test-replace'", first["image_id"]
    assert lines[0] == f"imgbuild: error: an AMI named {name} already exists in {REGION} ({image})"
    assert lines[1].startswith("hint:") and "--aws-replace" in lines[1] and len(lines) == 2
    # moto's RegisterImage ignores the block device mapping and makes a snapshot of its own, which the
    # image then names: --aws-replace deletes the snapshots the old image names, whatever they are.
    old_snapshots = {m["Ebs"]["SnapshotId"] for m in _image(moto, first["image_id"])["BlockDeviceMappings"]}
    second = _events(_upload(moto, disk, "imgbuild-test-replace", "--aws-replace").out)[-1]["result"]
    ec2 = moto.client("ec2")
    named = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": ["imgbuild-test-replace"]}]
    )
    assert [i["ImageId"] for i in named["Images"]] == [second["image_id"]]
    left = {s["SnapshotId"] for s in ec2.describe_snapshots()["Snapshots"]}
    assert old_snapshots and not old_snapshots & left and second["snapshot_id"] in left


def test_qcow2_disk_is_uploaded_as_its_raw_blocks(moto: MotoServer, tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.raw", arch="aarch64", bios=False, data=os.urandom(MiB)).path
    qcow2 = tmp_path / "disk.qcow2"
    run.run(["qemu-img", "convert", "-O", "qcow2", disk, qcow2])
    record = _events(_upload(moto, qcow2, "imgbuild-test-qcow2").out)[-1]["result"]
    assert (record["arch"], record["boot_mode"]) == ("aarch64", "uefi")
    assert snapshot_blocks(moto.client("ebs"), record["snapshot_id"]) == nonzero_blocks(disk)


@pytest.mark.parametrize(
    ("bios", "uefi", "imds", "boot_mode"),
    [(True, True, False, "uefi-preferred"), (True, False, True, "legacy-bios"), (False, True, False, "uefi")],
)
def test_register_request_sent(
    aws_env: MotoServer, tmp_path: Path, bios: bool, uefi: bool, imds: bool, boot_mode: str
) -> None:
    """moto ignores most of RegisterImage: capture the request imgbuild really sends during a real upload."""
    disk = make_disk(tmp_path / "disk.raw", bios=bios, uefi=uefi, data=b"x" * 100, size=3 * 1024 * MiB + 1)
    name = f"imgbuild-capture-{boot_mode}"
    settings = AwsSettings(region=REGION, ami_name=name, imds_v2_only=imds)
    clients = make_clients(settings)
    sent: list[dict[str, Any]] = []
    clients.ec2.meta.events.register(
        "provide-client-params.ec2.RegisterImage", lambda params, **_: sent.append(dict(params))
    )
    result = upload_disk(disk.path, settings, Progress(ProgressMode.PLAIN), clients=clients)
    expected = {
        "Name": name,
        "Description": f"{name} (imgbuild)",
        "Architecture": "x86_64",
        "BootMode": boot_mode,
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "SriovNetSupport": "simple",
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                # 3 GiB and one byte: the volume is rounded up to whole GiB.
                "Ebs": {
                    "SnapshotId": result.snapshot_id,
                    "VolumeSize": 4,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
        **({"ImdsSupport": "v2.0"} if imds else {}),
    }
    # The first RegisterImage is the preflight's DryRun; the second registers the AMI.
    assert sent[0]["DryRun"] is True
    assert sent[1:] == [expected]


def test_failed_registration_deletes_the_snapshot(aws_env: MotoServer, tmp_path: Path) -> None:
    """RegisterImage's connection fails after the snapshot is complete: the snapshot is deleted again."""
    disk = make_disk(tmp_path / "disk.raw", data=os.urandom(MiB))
    settings = AwsSettings(region=REGION, ami_name="imgbuild-register-fails")
    clients = make_clients(settings)

    def cut(request: Any, **_: Any) -> None:
        body = request.body or ""
        if "DryRun=true" not in (body.decode() if isinstance(body, bytes) else body):
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=request.url)

    clients.ec2.meta.events.register("before-send.ec2.RegisterImage", cut)
    ec2 = aws_env.client("ec2")
    before = {s["SnapshotId"] for s in ec2.describe_snapshots()["Snapshots"]}
    with pytest.raises(UploadError, match=r"^cannot reach AWS for ec2:RegisterImage"):
        upload_disk(disk.path, settings, Progress(ProgressMode.PLAIN), clients=clients)
    assert {s["SnapshotId"] for s in ec2.describe_snapshots()["Snapshots"]} == before
    assert not ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": [settings.ami_name]}]
    )["Images"]


def test_ami_builds_and_uploads_the_example(
    moto: MotoServer, example_x86_64: ExampleImage, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args: list[str | os.PathLike[str]] = [
        "ami", example_x86_64.reference, "--output", out, "--progress", "plain",
        "--aws-region", REGION, "--aws-ami-name", "imgbuild-example", "--aws-tag", "os=example",
    ]  # fmt: skip
    done = imgbuild(args, env=moto.env(), timeout=1800)
    result = json.loads((out / "result.json").read_text())
    (upload,) = result["uploads"]
    *paths, last = done.out.strip().splitlines()
    assert last == f"region={REGION} image_id={upload['image_id']} snapshot_id={upload['snapshot_id']}"
    assert paths == [str(out / result["outputs"][0]["path"])]
    assert (upload["arch"], upload["boot_mode"]) == ("x86_64", "uefi-preferred")
    disk = out / result["outputs"][0]["path"]
    assert snapshot_blocks(moto.client("ebs"), upload["snapshot_id"]) == nonzero_blocks(disk)
    assert _image(moto, upload["image_id"])["Name"] == "imgbuild-example"

    # The checks run before the build: an existing name fails at once, with nothing fetched or built.
    again = tmp_path / "again"
    args[3] = again
    refused = imgbuild(args, env=moto.env(), check=False, timeout=300)
    assert refused.returncode == 2 and "already exists" in refused.stderr.decode()
    assert not again.exists() or not any(again.iterdir())

    # The same flags on the combined build: several outputs, the ami one uploaded.
    both = tmp_path / "both"
    combined: list[str | os.PathLike[str]] = [
        "build", "--type", "qcow2", "--type", "ami", example_x86_64.reference, "--output", both,
        "--progress", "json", "--aws-region", REGION, "--aws-ami-name", "imgbuild-example-2",
    ]  # fmt: skip
    imgbuild(combined, env=moto.env(), timeout=1800)
    result = json.loads((both / "result.json").read_text())
    assert sorted(o["target"] for o in result["outputs"]) == ["ami", "qcow2"]
    (upload,) = result["uploads"]
    assert _image(moto, upload["image_id"])["Name"] == "imgbuild-example-2"
    ami_disk = both / next(o["disk"] for o in result["outputs"] if o["target"] == "ami")
    assert snapshot_blocks(moto.client("ebs"), upload["snapshot_id"]) == nonzero_blocks(ami_disk)
