"""Measure the AWS upload (EBS direct APIs) against moto on loopback, beside a plain read of the disk.

A sparse raw disk (GPT, ESP with a loader, random data in the root partition and a stretch of zeros written
out, not left as a hole) is made once per run; then, in the same run:
  - a plain sequential read of the whole disk (what any uploader that does not know the sparse map reads),
  - `upload_disk` with the default number of threads, and with one thread,
  - the S3 multipart upload of the whole disk that the S3 + ImportSnapshot path (and bootc-image-builder)
    sends before ImportSnapshot.
Prints bytes sent against the disk's size, and the upload rates (disk bytes covered per second, and bytes
sent per second) against the plain read's rate. moto keeps the blocks in memory and runs on the same two
cores, so the absolute rates say little about AWS; the ratios say what the zero skipping saves.
Run: `.venv/bin/python benchmarks/upload_bench.py [--size-mib 1024] [--data-mib 128]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.arch import Arch  # noqa: E402
from builder.progress import Progress, ProgressMode  # noqa: E402
from builder.upload.aws import upload_disk  # noqa: E402
from builder.upload.created import Created  # noqa: E402
from builder.upload.diskinfo import DiskInfo  # noqa: E402
from builder.upload.meter import Meter  # noqa: E402
from builder.upload.s3import import multipart_upload  # noqa: E402
from builder.upload.session import make_clients  # noqa: E402
from builder.upload.settings import AwsSettings  # noqa: E402
from tests.aws_helpers import REGION, MiB, make_disk, moto_server  # noqa: E402


def plain_read(path: Path) -> float:
    started = time.monotonic()
    with path.open("rb") as f:
        while f.read(4 * MiB):
            pass
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=128)
    parser.add_argument("--zeros-mib", type=int, default=64, help="zeros written out (not a hole)")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="upload-bench-"))
        moto = stack.enter_context(moto_server())
        disk = make_disk(
            Path(tmp) / "disk.raw",
            size=args.size_mib * MiB,
            data=os.urandom(args.data_mib * MiB),
            explicit_zeros=args.zeros_mib * MiB,
        ).path
        size = disk.stat().st_size
        allocated = disk.stat().st_blocks * 512
        for name, value in moto.env().items():
            os.environ[name] = value
        read_s = plain_read(disk)
        print(f"disk: {size / MiB:.0f} MiB, {allocated / MiB:.0f} MiB allocated ({args.zeros_mib} MiB zeros)")
        print(f"plain read of the disk: {read_s:.2f} s, {size / MiB / read_s:.0f} MiB/s")
        quiet = stack.enter_context(open(os.devnull, "w"))
        ebs_seconds = 0.0
        for workers in (AwsSettings.workers, 1):
            settings = AwsSettings(region=REGION, ami_name=f"bench-{workers}", workers=workers)
            started = time.monotonic()
            result = upload_disk(disk, settings, Progress(ProgressMode.PLAIN, err=quiet))
            seconds = time.monotonic() - started
            ebs_seconds = ebs_seconds or seconds
            print(
                f"upload, {workers:2d} thread(s): {seconds:.2f} s; sent {result.bytes_sent / MiB:.0f} MiB = "
                f"{result.bytes_sent / size:.3f} of the disk; {size / MiB / seconds:.0f} MiB/s of disk "
                f"({size / seconds / (size / read_s):.2f}x the plain read), "
                f"{result.bytes_sent / MiB / seconds:.0f} MiB/s sent"
            )
        # What an S3 + ImportSnapshot upload sends first: the whole disk, zeros and holes included.
        clients = make_clients(AwsSettings(region=REGION, ami_name="bench-s3"))
        clients.s3.create_bucket(Bucket="bench", CreateBucketConfiguration={"LocationConstraint": REGION})
        meter = Meter(Progress(ProgressMode.PLAIN, err=quiet), "upload", size)
        info = DiskInfo(disk, size, Arch.X86_64, True, True)
        started = time.monotonic()
        multipart_upload(clients, "bench", "disk.raw", info, meter, Created())
        seconds = time.monotonic() - started
        print(
            f"S3 multipart of the whole disk (before ImportSnapshot): {seconds:.2f} s, "
            f"sent {size / MiB:.0f} MiB; the EBS direct upload ({AwsSettings.workers} threads) "
            f"takes {ebs_seconds / seconds:.2f}x its time"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
