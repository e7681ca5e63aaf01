"""The one entry point for AWS uploads, shared by `imgbuild upload aws`, `imgbuild ami` and the service.

upload_disk: checks (unless already done before a build), uploads the disk as an EBS snapshot (EBS direct
APIs, or S3 + ImportSnapshot), registers the AMI, tags it and its snapshot, shares it. Anything it created
is removed again if a step fails or the upload is interrupted: it never leaves a half-made AMI.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from builder.errors import UploadError
from builder.progress import Progress
from builder.upload import ebs, register, s3import
from builder.upload.created import Created, removed_on_failure, sigterm_raises
from builder.upload.diskinfo import DiskInfo, inspect, raw_disk
from builder.upload.meter import Meter
from builder.upload.preflight import Checked, Method, preflight
from builder.upload.session import Clients, make_clients
from builder.upload.settings import AwsSettings


@dataclass(frozen=True)
class AwsResult:
    """What result.json records under `uploads` (no secret: ids, names and sizes only)."""

    cloud: str
    region: str
    account: str
    image_id: str
    snapshot_id: str
    name: str
    method: str  # ebs-direct or s3-import
    arch: str
    boot_mode: str
    shared_with: tuple[str, ...]
    tags: dict[str, str]
    disk_size: int
    bytes_sent: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["shared_with"] = list(self.shared_with)
        return record


def check(
    settings: AwsSettings, progress: Progress, clients: Clients | None = None
) -> tuple[Clients, Checked]:
    """The checks `imgbuild ami` runs before it builds anything."""
    clients = clients or make_clients(settings)
    checked = preflight(clients, settings, progress)
    if checked.method is Method.S3:
        progress.message(f"uploading through s3://{settings.bucket} and ImportSnapshot (--aws-bucket)")
    return clients, checked


def upload_disk(
    disk: Path,
    settings: AwsSettings,
    progress: Progress,
    *,
    clients: Clients | None = None,
    checked: Checked | None = None,
) -> AwsResult:
    if not disk.is_file():
        raise UploadError(f"{disk} is not a disk image file", hint="give the path of a built .raw or .qcow2")
    started = time.monotonic()
    with sigterm_raises():
        if clients is None or checked is None:
            clients, checked = check(settings, progress, clients)
        info, snapshot_id, image_id, sent = _upload(disk, settings, progress, clients, checked)
    return AwsResult(
        cloud="aws",
        region=settings.region,
        account=checked.account,
        image_id=image_id,
        snapshot_id=snapshot_id,
        name=settings.ami_name,
        method=checked.method.value,
        arch=info.arch.value,
        boot_mode=info.boot_mode.value,
        shared_with=settings.share_with,
        tags=dict(settings.tags),
        disk_size=info.size,
        bytes_sent=sent,
        seconds=round(time.monotonic() - started, 3),
    )


def _upload(
    disk: Path, settings: AwsSettings, progress: Progress, clients: Clients, checked: Checked
) -> tuple[DiskInfo, str, str, int]:
    """Upload, retire the replaced AMIs, register, tag, share: (disk, snapshot id, image id, bytes sent)."""
    created = Created()
    with raw_disk(disk) as raw, removed_on_failure(clients, created, progress):
        info = inspect(raw, named=disk)
        meter = Meter(progress, "upload", info.size)
        if checked.method is Method.S3:
            assert settings.bucket is not None, "preflight picks S3 only with a bucket"
            imported = s3import.upload(
                clients, info, settings.bucket, settings.tags, meter, created, progress
            )
            snapshot_id, sent = imported.snapshot_id, imported.bytes_sent
        else:
            done = ebs.upload(clients, info, settings.tags, settings.workers, meter, created)
            snapshot_id, sent = done.snapshot_id, done.bytes_sent
        for old in checked.replaces:
            progress.message(f"replacing {old['ImageId']} ({settings.ami_name})")
            register.retire(clients, old)
        image_id = register.register(clients, settings, info, snapshot_id)
        created.image_id = image_id
        register.tag(clients, [image_id, snapshot_id], settings.tags)
        register.share(clients, image_id, settings.share_with)
    return info, snapshot_id, image_id, sent
