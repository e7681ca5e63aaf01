"""What an upload has created so far in AWS, so that a failed or interrupted upload can remove all of it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from builder.errors import ImgbuildError, UploadError
from builder.progress import Progress
from builder.runner import Terminated
from builder.upload.session import Clients, explain

log = logging.getLogger(__name__)


class Created:
    """Filled in as resources appear, read by `removed_on_failure` (mutable: it changes during the upload)."""

    def __init__(self) -> None:
        self.snapshot_id: str | None = None
        self.image_id: str | None = None
        self.import_task_id: str | None = None
        self.s3_upload: tuple[str, str, str] | None = None  # bucket, key, multipart upload id
        self.s3_object: tuple[str, str] | None = None  # bucket, key

    def remove(self, clients: Clients) -> list[str]:
        """Remove everything recorded, in dependency order; returns what could not be removed and why."""
        failures: list[str] = []
        steps: list[tuple[str, str, Any]] = []
        if self.image_id:
            steps.append(
                ("ec2:DeregisterImage", self.image_id, lambda i: clients.ec2.deregister_image(ImageId=i))
            )
        if self.import_task_id:
            steps.append(
                (
                    "ec2:CancelImportTask",
                    self.import_task_id,
                    lambda t: clients.ec2.cancel_import_task(ImportTaskId=t),
                )
            )
        if self.snapshot_id:
            steps.append(
                ("ec2:DeleteSnapshot", self.snapshot_id, lambda s: clients.ec2.delete_snapshot(SnapshotId=s))
            )
        for action, what, call in steps:
            try:
                call(what)
                log.info("removed %s after the failed upload", what)
            except Exception as e:
                failures.append(f"{what} ({explain(e, action).message})")
        failures += self.remove_s3(clients)
        return failures

    def remove_s3(self, clients: Clients) -> list[str]:
        """The temporary S3 upload or object (also removed after a successful import)."""
        failures = []
        if self.s3_upload:
            bucket, key, upload_id = self.s3_upload
            try:
                clients.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                self.s3_upload = None
            except Exception as e:
                failures.append(f"s3://{bucket}/{key} ({explain(e, 's3:AbortMultipartUpload').message})")
        if self.s3_object:
            bucket, key = self.s3_object
            try:
                clients.s3.delete_object(Bucket=bucket, Key=key)
                self.s3_object = None
            except Exception as e:
                failures.append(f"s3://{bucket}/{key} ({explain(e, 's3:DeleteObject').message})")
        return failures


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only it can change signal handlers


@contextmanager
def _signals_held() -> Iterator[None]:
    """A second Ctrl-C or a SIGTERM must not cut the cleanup short."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM during an upload unwinds like Ctrl-C (Terminated is a KeyboardInterrupt), so it cleans up."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def removed_on_failure(clients: Clients, created: Created, progress: Progress) -> Iterator[None]:
    """On any failure or interrupt inside the block, remove what `created` records, then re-raise.

    A cleanup that fails is reported: in the error's message (with what to delete by hand) or, for an
    interrupt, as a message before the interrupt ends the program.
    """
    try:
        yield
    except BaseException as error:
        with _signals_held():
            failures = created.remove(clients)
        if not failures:
            raise
        left = "; ".join(failures)
        if isinstance(error, ImgbuildError):
            raise UploadError(
                f"{error.message}; and cleaning up failed for {left}",
                hint=f"delete them by hand in region {clients.region} (e.g. aws ec2 delete-snapshot)",
            ) from error
        progress.message(f"cleaning up after the interrupted upload failed for {left}; delete them by hand")
        raise
