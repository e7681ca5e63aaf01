"""The settings of an AWS upload, built from the `--aws-*` flags. No secret is ever part of them."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from builder.errors import UploadError

REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-\d+$")
ACCOUNT_PATTERN = re.compile(r"^\d{12}$")
# EC2's rule for AMI names: 3-128 characters of letters, digits and ( ) [ ] space . / - ' @ _
AMI_NAME_PATTERN = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
MAX_TAGS = 40  # EC2 allows 50 per resource; imgbuild adds its own


@dataclass(frozen=True)
class AwsSettings:
    region: str
    ami_name: str
    tags: tuple[tuple[str, str], ...] = ()
    share_with: tuple[str, ...] = ()  # account ids given launch permission
    bucket: str | None = None  # S3 multipart + ImportSnapshot instead of the EBS direct APIs
    profile: str | None = None  # a profile of the shared config files; credentials come from boto3's chain
    replace: bool = False  # deregister an AMI of the same name (and delete its snapshots) first
    imds_v2_only: bool = False
    workers: int = 16  # parallel PutSnapshotBlock requests

    def __post_init__(self) -> None:
        if not REGION_PATTERN.match(self.region):
            raise UploadError(
                f"{self.region!r} is not an AWS region name", hint="e.g. --aws-region us-east-1"
            )
        if not AMI_NAME_PATTERN.match(self.ami_name):
            raise UploadError(
                f"{self.ami_name!r} is not a valid AMI name",
                hint="3 to 128 letters, digits, spaces and ( ) [ ] . / - ' @ _",
            )
        for account in self.share_with:
            if not ACCOUNT_PATTERN.match(account):
                raise UploadError(
                    f"--aws-share {account!r} is not an AWS account id", hint="12 digits, e.g. 123456789012"
                )
        if len(self.tags) > MAX_TAGS:
            raise UploadError(f"{len(self.tags)} tags given, at most {MAX_TAGS}")
        if self.workers < 1:
            raise UploadError("the number of upload workers must be at least 1")


def parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or len(key) > 128 or len(value) > 256 or key.lower().startswith("aws:"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a tag: give KEY=VALUE (key 1-128 characters, not starting with aws:)"
        )
    return key, value


def add_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The --aws-* options; `required=False` where an upload is optional (`imgbuild build --type ami`)."""
    group = parser.add_argument_group(
        "AWS", "credentials come from boto3's standard chain (environment, shared config, instance role)"
    )
    group.add_argument("--aws-region", required=required, metavar="REGION", help="e.g. us-east-1")
    group.add_argument("--aws-ami-name", required=required, metavar="NAME", help="the name of the AMI")
    group.add_argument(
        "--aws-tag", type=parse_tag, action="append", default=[], metavar="KEY=VALUE",
        help="a tag for the AMI and its snapshot (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--aws-share", action="append", default=[], metavar="ACCOUNT",
        help="give this account id launch permission (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--aws-bucket", metavar="BUCKET",
        help="upload through this S3 bucket and ImportSnapshot (needs the vmimport role) instead of the "
        "EBS direct APIs",
    )  # fmt: skip
    group.add_argument("--aws-profile", metavar="PROFILE", help="a profile of ~/.aws/config")
    group.add_argument(
        "--aws-replace", action="store_true", help="replace an AMI of the same name (deregistered, deleted)"
    )
    group.add_argument("--aws-imds-v2-only", action="store_true", help="instances must use IMDSv2")


def requested(args: argparse.Namespace) -> bool:
    """Whether any --aws-* option was given (they are optional on `imgbuild build`)."""
    return any(
        getattr(args, name, None) not in (None, False, [])
        for name in ("aws_region", "aws_ami_name", "aws_tag", "aws_share", "aws_bucket", "aws_profile",
                     "aws_replace", "aws_imds_v2_only")
    )  # fmt: skip


def from_args(args: argparse.Namespace) -> AwsSettings:
    return AwsSettings(
        region=args.aws_region,
        ami_name=args.aws_ami_name,
        tags=tuple(args.aws_tag),
        share_with=tuple(dict.fromkeys(args.aws_share)),
        bucket=args.aws_bucket,
        profile=args.aws_profile,
        replace=args.aws_replace,
        imds_v2_only=args.aws_imds_v2_only,
    )
