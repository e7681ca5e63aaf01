"""Upload a raw disk to S3 (multipart, parallel) and turn it into an EBS snapshot with ImportSnapshot.

The fallback for accounts that refuse the EBS direct APIs (or when --aws-bucket asks for it): it needs a
bucket and the `vmimport` service role, and sends the whole disk, zeros included, since ImportSnapshot reads a
complete raw image. The S3 object is temporary: deleted after the import, and on failure.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from builder.errors import UploadError
from builder.progress import Progress
from builder.upload.created import Created
from builder.upload.diskinfo import DiskInfo
from builder.upload.meter import Meter
from builder.upload.session import Clients, explain

MiB = 1 << 20
MIN_PART = 32 * MiB
MAX_PARTS = 10_000  # S3's limit
PART_WORKERS = 4  # each holds one part in memory


@dataclass(frozen=True)
class S3Import:
    snapshot_id: str
    bytes_sent: int
    key: str


def part_size(size: int) -> int:
    needed = -(-size // MAX_PARTS)
    return max(MIN_PART, -(-needed // MiB) * MiB)


def _upload_part(
    clients: Clients,
    bucket: str,
    key: str,
    upload_id: str,
    fd: int,
    number: int,
    offset: int,
    length: int,
    meter: Meter,
) -> dict[str, Any]:
    data = os.pread(fd, length, offset)
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    try:
        answer = clients.s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, ChecksumSHA256=checksum
        )
    except Exception as e:
        raise explain(e, f"s3:UploadPart (part {number})") from e
    meter.add(sent=len(data), done=offset + length)
    return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}


def multipart_upload(
    clients: Clients, bucket: str, key: str, disk: DiskInfo, meter: Meter, created: Created
) -> None:
    started = clients.s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
    upload_id = started["UploadId"]
    created.s3_upload = (bucket, key, upload_id)
    step = part_size(disk.size)
    parts: list[dict[str, Any]] = []
    pending: set[Future[dict[str, Any]]] = set()
    fd = os.open(disk.path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(PART_WORKERS, thread_name_prefix="imgbuild-s3") as pool:
            try:
                for number, offset in enumerate(range(0, disk.size, step), start=1):
                    while len(pending) >= PART_WORKERS:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        parts += [f.result() for f in done]
                    length = min(step, disk.size - offset)
                    pending.add(
                        pool.submit(
                            _upload_part, clients, bucket, key, upload_id, fd, number, offset, length, meter
                        )
                    )
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    parts += [f.result() for f in done]
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        os.close(fd)
    parts.sort(key=lambda p: int(p["PartNumber"]))
    clients.s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    created.s3_upload = None
    created.s3_object = (bucket, key)


def _wait_import(clients: Clients, task_id: str, progress: Progress, poll: float) -> str:
    last = ""
    while True:
        try:
            tasks = clients.ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])["ImportSnapshotTasks"]
        except Exception as e:
            raise explain(e, "ec2:DescribeImportSnapshotTasks") from e
        detail = tasks[0].get("SnapshotTaskDetail", {}) if tasks else {}
        status = detail.get("Status", "unknown")
        if status == "completed" and detail.get("SnapshotId"):
            return str(detail["SnapshotId"])
        if status in ("deleted", "deleting", "unknown"):
            raise UploadError(
                f"ImportSnapshot task {task_id} failed: {detail.get('StatusMessage', status)}",
                hint="ImportSnapshot needs the vmimport service role with read access to the bucket",
            )
        state = f"{status} {detail.get('Progress', '')}% {detail.get('StatusMessage', '')}".strip()
        if state != last:
            progress.message(f"ImportSnapshot {task_id}: {state}")
            last = state
        time.sleep(poll)


def upload(
    clients: Clients,
    disk: DiskInfo,
    bucket: str,
    tags: tuple[tuple[str, str], ...],
    meter: Meter,
    created: Created,
    progress: Progress,
    *,
    poll: float = 15.0,
) -> S3Import:
    key = f"imgbuild/{uuid.uuid4()}.raw"
    try:
        multipart_upload(clients, bucket, key, disk, meter, created)
    except UploadError:
        raise
    except Exception as e:
        raise explain(e, f"the multipart upload to s3://{bucket}/{key}") from e
    meter.finish()
    params: dict[str, Any] = {
        "Description": "imgbuild upload",
        "DiskContainer": {
            "Description": "imgbuild upload",
            "Format": "RAW",
            "UserBucket": {"S3Bucket": bucket, "S3Key": key},
        },
        "ClientToken": str(uuid.uuid4()),
    }
    if tags:
        params["TagSpecifications"] = [
            {"ResourceType": "import-snapshot-task", "Tags": [{"Key": k, "Value": v} for k, v in tags]}
        ]
    try:
        task_id = str(clients.ec2.import_snapshot(**params)["ImportTaskId"])
    except Exception as e:
        raise explain(e, "ec2:ImportSnapshot") from e
    created.import_task_id = task_id
    snapshot_id = _wait_import(clients, task_id, progress, poll)
    created.import_task_id = None
    created.snapshot_id = snapshot_id
    leftovers = created.remove_s3(clients)
    if leftovers:
        progress.message(f"could not delete the temporary upload {'; '.join(leftovers)}")
    return S3Import(snapshot_id, disk.size, key)
