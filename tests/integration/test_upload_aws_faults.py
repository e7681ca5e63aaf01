"""Faults during AWS uploads: wrong credentials, denied permissions, the network or server lost, SIGINT.

Every case must end with one error line (and a hint), exit 2 (130 for SIGINT), no AMI registered and no
snapshot left behind. moto enforces IAM once INITIAL_NO_AUTH_ACTION_COUNT requests have been served: the
tests create an IAM user and policy with the first requests, then upload with that user's keys.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder import run
from tests.aws_helpers import REGION, CuttableProxy, MiB, MotoServer, make_disk, moto_server
from tests.imagebuilds import ROOT, imgbuild

IAM_SETUP_REQUESTS = 3  # CreateUser, CreateAccessKey, PutUserPolicy


@dataclass(frozen=True)
class IamMoto:
    """A moto server enforcing IAM, and the keys of an administrator made with its unchecked requests."""

    server: MotoServer
    admin: dict[str, str]

    def client(self, service: str) -> Any:
        return self.server.client(service, **self.admin)


@pytest.fixture(scope="module")
def iam_moto() -> Iterator[IamMoto]:
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT=str(IAM_SETUP_REQUESTS)) as server:
        admin = _make_user(server.client("iam"), "admin", ["*"])
        yield IamMoto(server, admin)


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


def _make_user(iam: Any, name: str, actions: list[str]) -> dict[str, str]:
    """An IAM user allowed exactly `actions` (three requests); returns its keys as boto3 arguments."""
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="upload", PolicyDocument=json.dumps(policy))
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def _user(iam_moto: IamMoto, name: str, actions: list[str]) -> dict[str, str]:
    """The environment of an upload by a new user allowed exactly `actions`."""
    keys = _make_user(iam_moto.client("iam"), name, actions)
    return iam_moto.server.env(
        AWS_ACCESS_KEY_ID=keys["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=keys["aws_secret_access_key"]
    )


def _state(moto: MotoServer | IamMoto) -> tuple[set[str], set[str]]:
    """(image ids, snapshot ids) the account can see."""
    ec2 = moto.client("ec2")
    images = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    return images, {s["SnapshotId"] for s in ec2.describe_snapshots()["Snapshots"]}


def _upload_args(disk: Path, name: str) -> list[str | os.PathLike[str]]:
    return ["upload", "aws", disk, "--aws-region", REGION, "--aws-ami-name", name, "--progress", "json"]


def _one_error(completed: Any, start: str) -> str:
    lines = completed.stderr.decode().strip().splitlines()
    assert completed.returncode == 2, completed.stderr.decode()
    assert lines[0].startswith(f"imgbuild: error: {start}"), lines
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines
    return str(lines[0])


def test_wrong_credentials(iam_moto: IamMoto, tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.raw", data=b"data" * 100).path
    env = iam_moto.server.env(
        AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG0", AWS_SECRET_ACCESS_KEY="not-the-secret"
    )
    done = imgbuild(_upload_args(disk, "imgbuild-wrong-creds"), env=env, check=False)
    _one_error(done, "AWS rejected the credentials (sts:GetCallerIdentity: InvalidClientTokenId)")
    assert "not-the-secret" not in done.stderr.decode()


def test_ebs_direct_refused_before_any_upload(iam_moto: IamMoto, tmp_path: Path) -> None:
    env = _user(iam_moto, "no-ebs", ["ec2:*", "sts:*"])
    disk = make_disk(tmp_path / "disk.raw", data=b"data" * 100).path
    before = _state(iam_moto)
    done = imgbuild(_upload_args(disk, "imgbuild-no-ebs"), env=env, check=False)
    _one_error(done, f"the account refuses the EBS direct APIs in {REGION}")
    assert "--aws-bucket" in done.stderr.decode()
    assert _state(iam_moto) == before


def test_denied_registration_is_found_before_the_upload(iam_moto: IamMoto, tmp_path: Path) -> None:
    actions = ["sts:*", "ebs:*", "ec2:DescribeImages", "ec2:DeleteSnapshot", "ec2:DeregisterImage"]
    env = _user(iam_moto, "no-register", actions)
    disk = make_disk(tmp_path / "disk.raw", data=os.urandom(2 * MiB)).path
    before = _state(iam_moto)
    done = imgbuild(_upload_args(disk, "imgbuild-no-register"), env=env, check=False)
    _one_error(done, "AWS denied ec2:RegisterImage: User: arn:aws:iam::123456789012:user/no-register")
    assert _state(iam_moto) == before


def test_missing_bucket_and_missing_import_snapshot(moto: MotoServer, tmp_path: Path) -> None:
    """--aws-bucket: the bucket is checked first; then ImportSnapshot, which moto lacks (an HTML 500 page)."""
    disk = make_disk(tmp_path / "disk.raw", data=b"data" * 100).path
    before = _state(moto)
    args = [*_upload_args(disk, "imgbuild-bucket"), "--aws-bucket", "no-such-bucket"]
    _one_error(imgbuild(args, env=moto.env(), check=False), "s3:HeadBucket of no-such-bucket failed: 404")
    moto.client("s3").create_bucket(Bucket="images", CreateBucketConfiguration={"LocationConstraint": REGION})
    args[-1] = "images"
    done = imgbuild(args, env=moto.env(), check=False)
    _one_error(done, "ec2:ImportSnapshot failed: the endpoint's answer is not an AWS API response")
    assert _state(moto) == before
    assert not moto.client("s3").list_multipart_uploads(Bucket="images").get("Uploads")


@contextmanager
def _upload_with_blocks_flowing(env: dict[str, str], disk: Path, name: str) -> Iterator[Any]:
    """Start `imgbuild upload aws` and yield the process once its progress reports bytes sent."""
    argv = [sys.executable, "-m", "builder", *map(str, _upload_args(disk, name))]
    with run.spawn(argv, env={"PYTHONPATH": str(ROOT), **env}, check=False) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "transfer" and 0 < event["sent"] < event["total"]:
                break
        else:
            raise AssertionError("the upload ended before blocks were sent")
        yield proc


def _finish(proc: Any) -> run.Completed:
    proc.wait(120)
    return run.Completed((), proc.returncode, b"", proc.stderr.read())


def _big_disk(tmp_path: Path) -> Path:
    # 192 MiB of data: several seconds of PutSnapshotBlock against moto, time enough to break in.
    return make_disk(tmp_path / "disk.raw", size=256 * MiB, data=b"imgbuild" * (24 * MiB)).path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_the_upload(moto: MotoServer, tmp_path: Path, signum: int) -> None:
    """Ctrl-C (and SIGTERM, handled alike) while blocks are being put: exit 130, nothing left."""
    disk = _big_disk(tmp_path)
    before = _state(moto)
    with _upload_with_blocks_flowing(moto.env(), disk, "imgbuild-sigint") as proc:
        proc.send_signal(signum)
        done = _finish(proc)
    assert done.returncode == 130
    assert done.stderr.decode().strip().splitlines() == ["imgbuild: interrupted"]
    assert _state(moto) == before


def test_network_lost_during_the_upload(moto: MotoServer, tmp_path: Path) -> None:
    """The EBS endpoint goes away under the block uploads; EC2 stays reachable, so the cleanup works."""
    disk = _big_disk(tmp_path)
    proxy = CuttableProxy(int(moto.url.rsplit(":", 1)[1]))
    before = _state(moto)
    env = moto.env(AWS_ENDPOINT_URL_EBS=proxy.url)
    with _upload_with_blocks_flowing(env, disk, "imgbuild-netloss") as proc:
        proxy.cut()
        done = _finish(proc)
    _one_error(done, "cannot reach AWS for ebs:PutSnapshotBlock")
    assert _state(moto) == before


def test_server_stopped_during_the_upload(moto: MotoServer, tmp_path: Path) -> None:
    """Nothing can be deleted once the whole endpoint is gone: the error says what is left, and where."""
    disk = _big_disk(tmp_path)
    with _upload_with_blocks_flowing(moto.env(), disk, "imgbuild-stopped") as proc:
        moto.stop()
        done = _finish(proc)
    line = _one_error(done, "cannot reach AWS for ebs:PutSnapshotBlock")
    assert "cleaning up failed for snap-" in line
