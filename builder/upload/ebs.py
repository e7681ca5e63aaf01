"""Upload a raw disk as an EBS snapshot through the EBS direct APIs: no S3 bucket, no vmimport role.

StartSnapshot, then PutSnapshotBlock for every non-zero 512 KiB block from a pool of threads (each block
carries its SHA256), then CompleteSnapshot with the LINEAR aggregate of those checksums. The main thread
reads the disk's data extents and keeps at most two blocks per thread in flight, so memory stays small
whatever the disk's size. The first error in any thread stops the upload and is raised; the caller deletes
the partial snapshot.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from builder.upload.blocks import BLOCK_SIZE, Block, linear_checksum, read_blocks, scanned_bytes, sha256_b64
from builder.upload.created import Created
from builder.upload.diskinfo import DiskInfo
from builder.upload.meter import Meter
from builder.upload.session import Clients, explain

log = logging.getLogger(__name__)

GiB = 1 << 30
# StartSnapshot's Timeout (minutes): AWS cancels a snapshot that gets no block or no completion for this
# long, so even a snapshot that could not be deleted after a crash does not stay pending.
TIMEOUT_MINUTES = 60


@dataclass(frozen=True)
class EbsUpload:
    snapshot_id: str
    blocks: int  # blocks sent
    bytes_sent: int


def volume_gib(size: int) -> int:
    return max(1, -(-size // GiB))


def _tags(tags: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags]


class _Putter:
    def __init__(self, ebs: Any, snapshot_id: str, meter: Meter) -> None:
        self.ebs = ebs
        self.snapshot_id = snapshot_id
        self.meter = meter
        self.stop = threading.Event()

    def put(self, block: Block) -> tuple[int, str] | None:
        if self.stop.is_set():  # the upload failed or was interrupted: do not start more requests
            return None
        checksum = sha256_b64(block.data)
        try:
            self.ebs.put_snapshot_block(
                SnapshotId=self.snapshot_id,
                BlockIndex=block.index,
                BlockData=block.data,
                DataLength=BLOCK_SIZE,
                Checksum=checksum,
                ChecksumAlgorithm="SHA256",
            )
        except Exception as e:
            raise explain(e, f"ebs:PutSnapshotBlock (block {block.index})") from e
        self.meter.add(sent=BLOCK_SIZE)
        return block.index, checksum


def _collect(done: set[Future[tuple[int, str] | None]], checksums: dict[int, str]) -> None:
    for future in done:
        result = future.result()  # raises the thread's error
        if result is not None:
            checksums[result[0]] = result[1]


def _put_blocks(
    clients: Clients, snapshot_id: str, disk: DiskInfo, workers: int, meter: Meter
) -> dict[int, str]:
    putter = _Putter(clients.ebs, snapshot_id, meter)
    checksums: dict[int, str] = {}
    pending: set[Future[tuple[int, str] | None]] = set()
    fd = os.open(disk.path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="imgbuild-ebs") as pool:
            try:
                for block in read_blocks(fd, disk.size):
                    while len(pending) >= 2 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        _collect(done, checksums)
                    pending.add(pool.submit(putter.put, block))
                    meter.add(done=scanned_bytes(disk.size, block.index))
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    _collect(done, checksums)
            except BaseException:
                # Stop the threads before the caller deletes the snapshot: no new request starts, and the
                # requests already on the wire are waited for. Their errors follow the first one, which
                # is raised; they are logged (-v), not lost.
                putter.stop.set()
                for future in pending:
                    future.cancel()
                for future in wait(pending).done:
                    if not future.cancelled() and future.exception() is not None:
                        log.info("another block upload failed too: %s", future.exception())
                raise
    finally:
        os.close(fd)
    return checksums


def upload(
    clients: Clients,
    disk: DiskInfo,
    tags: tuple[tuple[str, str], ...],
    workers: int,
    meter: Meter,
    created: Created,
) -> EbsUpload:
    try:
        started = clients.ebs.start_snapshot(
            VolumeSize=volume_gib(disk.size),
            Timeout=TIMEOUT_MINUTES,
            Description="imgbuild upload",
            ClientToken=str(uuid.uuid4()),
            **({"Tags": _tags(tags)} if tags else {}),
        )
    except Exception as e:
        raise explain(e, "ebs:StartSnapshot") from e
    snapshot_id = str(started["SnapshotId"])
    created.snapshot_id = snapshot_id
    checksums = _put_blocks(clients, snapshot_id, disk, workers, meter)
    meter.finish()
    try:
        clients.ebs.complete_snapshot(
            SnapshotId=snapshot_id,
            ChangedBlocksCount=len(checksums),
            Checksum=linear_checksum(checksums),
            ChecksumAlgorithm="SHA256",
            ChecksumAggregationMethod="LINEAR",
        )
    except Exception as e:
        raise explain(e, "ebs:CompleteSnapshot") from e
    try:
        clients.ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[snapshot_id], WaiterConfig={"Delay": 5, "MaxAttempts": 720}
        )
    except Exception as e:
        raise explain(e, "waiting for the snapshot to complete") from e
    return EbsUpload(snapshot_id, len(checksums), len(checksums) * BLOCK_SIZE)
