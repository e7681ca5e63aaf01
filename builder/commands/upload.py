"""`imgbuild upload aws DISK` (upload a built disk and register an AMI) and `imgbuild ami REF` (build, then
upload; the AWS checks run before anything is fetched or built)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.commands import options
from builder.commands.image import (
    _before_fetching,
    _build_arguments,
    _make_manifest,
    _plan_arguments,
    give_outputs,
    progress_argument,
)
from builder.errors import ImgbuildError, UploadError
from builder.progress import Progress, ProgressMode
from builder.runner import build
from builder.upload import settings as aws_settings

if TYPE_CHECKING:
    from builder.upload.aws import AwsResult


def record_upload(result_file: Path, record: dict[str, Any]) -> None:
    """Add the upload to result.json's `uploads` list (written beside, then renamed)."""
    result = json.loads(result_file.read_text())
    result.setdefault("uploads", []).append(record)
    tmp = result_file.with_name(f".{result_file.name}.tmp")
    try:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(result_file)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ImgbuildError(f"cannot record the upload in {result_file}: {e.strerror}") from e


def _result_beside(disk: Path) -> Path | None:
    result_file = disk.parent / "result.json"
    try:
        outputs = json.loads(result_file.read_text()).get("outputs", [])
    except (OSError, ValueError, AttributeError):
        return None
    return result_file if any(o.get("path") == disk.name for o in outputs) else None


def _report(result: AwsResult, progress: Progress, result_file: Path | None) -> None:
    record = result.as_dict()
    if result_file is not None:
        record_upload(result_file, record)
    progress.uploaded(record)
    if progress.mode is not ProgressMode.JSON:
        print(f"region={result.region} image_id={result.image_id} snapshot_id={result.snapshot_id}")


def cmd_upload_aws(args: argparse.Namespace) -> int:
    # boto3 is imported only by the commands that upload: every other command starts without it.
    from builder.upload.aws import upload_disk

    settings = aws_settings.from_args(args)
    progress = Progress(args.progress)
    result = upload_disk(args.disk, settings, progress)
    _report(result, progress, _result_beside(args.disk))
    return 0


def build_and_upload(types: list[str], reference: str, args: argparse.Namespace) -> int:
    """Build `types` (the ami among them) from `reference`, then register the ami output as an AMI: the
    AWS checks run before anything is fetched or built. `imgbuild ami REF` and
    `imgbuild build --type ami ... --aws-region R --aws-ami-name NAME REF` both come here."""
    from builder.upload.aws import check, upload_disk

    _before_fetching(args)
    if "ami" not in types:
        raise ImgbuildError(
            "the --aws-* options upload the ami output, and no --type ami was asked for",
            hint="add --type ami, or leave out the --aws-* options",
        )
    if args.aws_region is None or args.aws_ami_name is None:
        raise ImgbuildError(
            "an AMI upload needs both --aws-region and --aws-ami-name",
            hint="e.g. --aws-region us-east-1 --aws-ami-name my-os-1",
        )
    settings = aws_settings.from_args(args)
    progress = Progress(args.progress)
    clients, checked = check(settings, progress)  # before anything is fetched or built
    manifest = _make_manifest(types, reference, args)
    built = build(
        manifest,
        output_dir=args.output,
        cache=options.cache_root(args),
        progress=progress,
        preflight=False,
        registry=options.registry(args),
    )
    disks = [o for o in built.outputs if o.get("target") == "ami"]
    if len(disks) != 1:
        raise UploadError(f"the build wrote {len(disks)} ami disks, expected one")
    if progress.mode is not ProgressMode.JSON:
        for output in built.outputs:
            print(args.output / output["path"])
    disk = args.output / disks[0]["disk"]
    result = upload_disk(disk, settings, progress, clients=clients, checked=checked)
    _report(result, progress, built.result_file)
    give_outputs(args, built)  # after _report: it rewrote result.json
    return 0


def cmd_ami(args: argparse.Namespace) -> int:
    return build_and_upload(["ami"], args.reference, args)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    upload = sub.add_parser("upload", help="upload a built disk to a cloud")
    clouds = upload.add_subparsers(dest="cloud", metavar="CLOUD")
    clouds.required = True
    aws = clouds.add_parser("aws", help="upload a disk as an EBS snapshot and register an AMI")
    aws.add_argument("disk", type=Path, metavar="DISK", help="a raw (or qcow2) disk built by imgbuild")
    progress_argument(aws)
    aws_settings.add_arguments(aws)
    aws.set_defaults(func=cmd_upload_aws)

    ami = sub.add_parser("ami", help="build a disk from a container image and register it as an AWS AMI")
    _plan_arguments(ami)
    _build_arguments(ami)
    aws_settings.add_arguments(ami)
    ami.set_defaults(func=cmd_ami)
