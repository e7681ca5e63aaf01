"""Compose images in S3-compatible object storage (`serve --object-store s3://BUCKET[/PREFIX]`).

The service holds the only credentials (boto3's standard chain; AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 for
S3-compatible stores, as builder/upload/session.py). A remote worker gets presigned URLs for exactly one key,
`PREFIX/COMPOSE/run-N/NAME`, and only for the compose and run it holds the claim of: it can write nothing
else. Files up to `part_size` go in one presigned PUT; larger ones (S3 takes at most 5 GiB in one PUT) in a
multipart upload whose parts each get a presigned URL, completed by the service with the parts' ETags. The
service then checks the object (HeadObject: its size) before the compose counts as FINISHED, and streams it
to clients (`compose image`, `compose results`) with the headers a local file gets.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import botocore.exceptions
from botocore.config import Config

from builder.errors import ImgbuildError, UploadError
from builder.upload.session import explain

MiB = 1 << 20
PART_SIZE = 64 * MiB  # 10,000 parts (S3's limit) of this: 625 GiB
MIN_PART_SIZE = 5 * MiB  # S3's smallest part (but the last)
URL_LIFETIME = 6 * 3600  # seconds a presigned URL stays valid: a slow link's 10 GiB upload
LOCATION = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")


def _s3_client() -> Any:
    """An S3 client from boto3's chain, signing with SigV4 (presigned URLs included)."""
    import boto3

    for name in ("boto3", "botocore", "urllib3", "s3transfer"):  # their debug log shows request headers
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))
    config = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="imgbuild",
    )
    session = boto3.Session()
    return session.client("s3", region_name=session.region_name or "us-east-1", config=config)


@dataclass(frozen=True)
class Upload:
    """Where a worker puts one output: a single PUT (`url`) or a multipart upload (`upload_id`, `urls`)."""

    key: str
    url: str | None = None
    upload_id: str | None = None
    part_size: int = 0
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        if self.url is not None:
            return {"key": self.key, "url": self.url}
        return {
            "key": self.key,
            "upload_id": self.upload_id,
            "part_size": self.part_size,
            "urls": list(self.urls),
        }


class ObjectStore:
    def __init__(self, location: str, part_size: int = PART_SIZE, client: Any = None) -> None:
        match = LOCATION.match(location)
        if match is None:
            raise ImgbuildError(
                f"--object-store wants s3://BUCKET[/PREFIX], not {location!r}",
                hint="the endpoint and credentials come from the AWS environment (AWS_ENDPOINT_URL_S3 ...)",
            )
        if part_size < MIN_PART_SIZE:
            raise ImgbuildError(f"object store part size {part_size} is below S3's minimum {MIN_PART_SIZE}")
        self.location = location
        self.bucket = match.group(1)
        prefix = (match.group(2) or "").strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.part_size = part_size
        self.s3 = client if client is not None else _s3_client()

    def key(self, compose_id: str, run: int, name: str) -> str:
        return f"{self.prefix}{compose_id}/run-{run}/{name}"

    def _call(self, action: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(Bucket=self.bucket, **kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise explain(e, f"s3:{action} on {self.location}") from None

    def check(self) -> None:
        """That the service can write (and delete) in the store: a probe object, removed at once."""
        probe = f"{self.prefix}.imgbuild-probe-{uuid.uuid4()}"
        try:
            self._call("PutObject", self.s3.put_object, Key=probe, Body=b"")
            self._call("DeleteObject", self.s3.delete_object, Key=probe)
        except UploadError as e:
            raise UploadError(f"cannot write to the object store: {e.message}", hint=e.hint) from None

    def plan(self, compose_id: str, run: int, name: str, size: int) -> Upload:
        key = self.key(compose_id, run, name)
        if size <= self.part_size:
            url = self._presign("put_object", Key=key)
            return Upload(key, url=url)
        upload = self._call("CreateMultipartUpload", self.s3.create_multipart_upload, Key=key)
        upload_id = str(upload["UploadId"])
        count = -(-size // self.part_size)
        urls = tuple(
            self._presign("upload_part", Key=key, UploadId=upload_id, PartNumber=n)
            for n in range(1, count + 1)
        )
        return Upload(key, upload_id=upload_id, part_size=self.part_size, urls=urls)

    def _presign(self, method: str, **params: Any) -> str:
        return str(
            self.s3.generate_presigned_url(
                method, Params={"Bucket": self.bucket, **params}, ExpiresIn=URL_LIFETIME
            )
        )

    def complete(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
        self._call(
            "CompleteMultipartUpload",
            self.s3.complete_multipart_upload,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

    def size(self, key: str) -> int | None:
        """The object's size; None when there is none."""
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise explain(e, f"s3:HeadObject on {self.location}") from None
        except botocore.exceptions.BotoCoreError as e:
            raise explain(e, f"s3:HeadObject on {self.location}") from None
        return int(head["ContentLength"])

    def open(self, key: str) -> BinaryIO:
        """The object's body, to read in chunks."""
        body: BinaryIO = self._call("GetObject", self.s3.get_object, Key=key)["Body"]
        return body

    def delete_compose(self, compose_id: str) -> int:
        """Every object of the compose (each run's, unfinished multipart uploads too); how many."""
        prefix = f"{self.prefix}{compose_id}/"
        uploads = self._call("ListMultipartUploads", self.s3.list_multipart_uploads, Prefix=prefix)
        for upload in uploads.get("Uploads", []):
            self._call(
                "AbortMultipartUpload",
                self.s3.abort_multipart_upload,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
            )
        count = 0
        paginator = self.s3.get_paginator("list_objects_v2")
        try:
            pages = list(paginator.paginate(Bucket=self.bucket, Prefix=prefix))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise explain(e, f"s3:ListObjectsV2 on {self.location}") from None
        for page in pages:
            for item in page.get("Contents", []):
                self._call("DeleteObject", self.s3.delete_object, Key=item["Key"])
                count += 1
        return count


STORED_NAME = "stored.json"  # in a compose's output directory: its image's key in the store


@dataclass(frozen=True)
class Stored:
    name: str  # the image's file name, as result.json names it
    key: str
    size: int


def write_stored(output_dir: Path, stored: Stored) -> None:
    partial = output_dir / (STORED_NAME + ".partial")
    partial.write_text(json.dumps({"name": stored.name, "key": stored.key, "size": stored.size}) + "\n")
    partial.replace(output_dir / STORED_NAME)


def read_stored(output_dir: Path) -> Stored | None:
    """The image in the object store, or None (a local file, or nothing)."""
    try:
        data = json.loads((output_dir / STORED_NAME).read_text())
        return Stored(str(data["name"]), str(data["key"]), int(data["size"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ImgbuildError(f"{output_dir / STORED_NAME} is malformed ({e})") from None
