"""Checks that run before anything is built or read: credentials, region, permissions, the AMI name.

EC2 permissions are checked with DryRun requests (AWS answers DryRunOperation when the call would be
allowed, UnauthorizedOperation when not). The EBS direct APIs have no DryRun, so the EBS path starts a
1 GiB snapshot, puts one block and deletes it again; with --aws-bucket, S3 is checked by starting and
aborting a multipart upload, ImportSnapshot by DryRun.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from builder.errors import UploadError
from builder.progress import Progress
from builder.upload.blocks import BLOCK_SIZE, ZERO_BLOCK, sha256_b64
from builder.upload.register import ROOT_DEVICE, images_named
from builder.upload.session import CREDENTIAL_CODES, DENIED_CODES, Clients, error_code, explain
from builder.upload.settings import AwsSettings

# Well-formed ids of nothing: DryRun checks the permission, not the resource.
NO_SNAPSHOT = "snap-00000000000000000"
NO_IMAGE = "ami-00000000000000000"


class Method(enum.StrEnum):
    EBS = "ebs-direct"
    S3 = "s3-import"


@dataclass(frozen=True)
class Checked:
    account: str
    method: Method
    replaces: tuple[dict[str, Any], ...]  # the AMIs of the same name that --aws-replace retires


def _call(action: str, call: Callable[..., Any], **params: Any) -> Any:
    try:
        return call(**params)
    except Exception as e:
        raise explain(e, action) from e


def _dry_run(action: str, call: Callable[..., Any], **params: Any) -> None:
    try:
        call(DryRun=True, **params)
    except botocore.exceptions.ClientError as e:
        code = error_code(e)
        if code in DENIED_CODES or code in CREDENTIAL_CODES:
            raise explain(e, action) from e
        # DryRunOperation (allowed) or a complaint about the placeholder ids: the permission is there.
    except Exception as e:
        raise explain(e, action) from e


def _probe_ebs(clients: Clients, progress: Progress) -> bool:
    """Whether the account lets us use the EBS direct APIs; False when it refuses them."""
    try:
        snapshot = clients.ebs.start_snapshot(
            VolumeSize=1,
            Timeout=10,
            Description="imgbuild preflight (deleted at once)",
            ClientToken=str(uuid.uuid4()),
        )["SnapshotId"]
    except botocore.exceptions.ClientError as e:
        if error_code(e) in DENIED_CODES or error_code(e) == "UnsupportedOperation":
            return False
        raise explain(e, "ebs:StartSnapshot") from e
    except Exception as e:
        raise explain(e, "ebs:StartSnapshot") from e
    try:
        clients.ebs.put_snapshot_block(
            SnapshotId=snapshot,
            BlockIndex=0,
            BlockData=ZERO_BLOCK,
            DataLength=BLOCK_SIZE,
            Checksum=sha256_b64(ZERO_BLOCK),
            ChecksumAlgorithm="SHA256",
        )
    except Exception as e:
        raise explain(e, "ebs:PutSnapshotBlock") from e
    finally:  # also on Ctrl-C
        try:
            clients.ec2.delete_snapshot(SnapshotId=snapshot)
        except Exception as e:
            progress.message(
                f"could not delete the preflight snapshot {snapshot} "
                f"({explain(e, 'ec2:DeleteSnapshot').message}); AWS cancels it after 10 minutes"
            )
    return True


def _check_s3(clients: Clients, bucket: str) -> None:
    try:
        clients.s3.head_bucket(Bucket=bucket)
    except Exception as e:
        error = explain(e, f"s3:HeadBucket of {bucket}")
        if error_code(e) in ("404", "NoSuchBucket"):
            error.hint = f"create the bucket in {clients.region}, or check --aws-bucket"
        raise error from e
    key = f"imgbuild-preflight-{uuid.uuid4()}"
    upload = _call("s3:CreateMultipartUpload", clients.s3.create_multipart_upload, Bucket=bucket, Key=key)
    _call(
        "s3:AbortMultipartUpload",
        clients.s3.abort_multipart_upload,
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
    )


def preflight(clients: Clients, settings: AwsSettings, progress: Progress) -> Checked:
    account = str(_call("sts:GetCallerIdentity", clients.sts.get_caller_identity)["Account"])
    existing = images_named(clients, settings.ami_name)
    if existing and not settings.replace:
        raise UploadError(
            f"an AMI named {settings.ami_name!r} already exists in {settings.region} "
            f"({existing[0]['ImageId']})",
            hint="choose another --aws-ami-name, or pass --aws-replace to replace it",
        )
    ec2 = clients.ec2
    mapping = [{"DeviceName": ROOT_DEVICE, "Ebs": {"SnapshotId": NO_SNAPSHOT}}]
    _dry_run(
        "ec2:RegisterImage",
        ec2.register_image,
        Name=settings.ami_name,
        RootDeviceName=ROOT_DEVICE,
        BlockDeviceMappings=mapping,
    )
    _dry_run("ec2:DeleteSnapshot", ec2.delete_snapshot, SnapshotId=NO_SNAPSHOT)
    _dry_run("ec2:DeregisterImage", ec2.deregister_image, ImageId=NO_IMAGE)
    if settings.tags:
        _dry_run(
            "ec2:CreateTags",
            ec2.create_tags,
            Resources=[NO_IMAGE],
            Tags=[{"Key": "imgbuild", "Value": "preflight"}],
        )
    if settings.share_with:
        _dry_run(
            "ec2:ModifyImageAttribute",
            ec2.modify_image_attribute,
            ImageId=NO_IMAGE,
            LaunchPermission={"Add": [{"UserId": settings.share_with[0]}]},
        )
    if settings.bucket is not None:
        _check_s3(clients, settings.bucket)
        _dry_run(
            "ec2:ImportSnapshot",
            ec2.import_snapshot,
            DiskContainer={
                "Format": "RAW",
                "UserBucket": {"S3Bucket": settings.bucket, "S3Key": "imgbuild-preflight"},
            },
        )
        method = Method.S3
    elif _probe_ebs(clients, progress):
        method = Method.EBS
    else:
        raise UploadError(
            f"the account refuses the EBS direct APIs in {settings.region} (ebs:StartSnapshot)",
            hint="grant ebs:StartSnapshot, ebs:PutSnapshotBlock and ebs:CompleteSnapshot, or give "
            "--aws-bucket BUCKET to upload through S3 and ImportSnapshot (needs the vmimport role)",
        )
    return Checked(account, method, tuple(existing))
