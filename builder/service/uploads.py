"""Upload profiles in compose requests, as composer-cli sends them.

`composer-cli compose start NAME ami IMAGE_NAME PROFILE.toml` sends `"upload": {"image_name": ...,
"provider": "aws", "settings": {"accessKeyID", "secretAccessKey", "sessionToken"?, "bucket", "region",
"key"}}` (osbuild-composer's AWS upload settings). The five-argument form (`IMAGE_NAME PROVIDER PROFILE`)
names a profile stored on the server, which imgbuild has none of. Only AWS is a provider imgbuild can
upload to; every other one is refused, never dropped.

The credentials are secrets: an AwsUpload never shows them (repr, public()), and the service never stores
them; `public()` is what a compose may keep. `start_upload` is the one place the compose route hands an
upload over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from builder.service.weldr import COMPOSE_ERROR, WeldrError

UPLOAD_ERROR = "UploadError"
AWS_UNAVAILABLE = "AWS upload not available in this build"

# AWS names: regions (us-east-1), S3 buckets (3-63 lower-case letters, digits, '.', '-'), object keys
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY = re.compile(r"^[\x21-\x7e]{1,1024}$")
_IMAGE_NAME = re.compile(r"^[A-Za-z0-9()\[\] ./'@_-]{3,128}$")  # EC2's rule for AMI names
_SETTINGS = {"accessKeyID", "secretAccessKey", "sessionToken", "bucket", "region", "key"}


@dataclass(frozen=True)
class AwsUpload:
    image_name: str
    region: str
    bucket: str
    key: str
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)

    def public(self) -> dict[str, str]:
        """What may be stored and shown: no credentials."""
        return {
            "provider": "aws",
            "image_name": self.image_name,
            "region": self.region,
            "bucket": self.bucket,
            "key": self.key,
        }


def _refuse(msg: str) -> WeldrError:
    return WeldrError(UPLOAD_ERROR, msg)


def _text(settings: dict[str, Any], key: str, pattern: re.Pattern[str] | None, required: bool) -> str:
    value = settings.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise _refuse(f"the AWS upload profile needs settings.{key} (a string)")
    if value and pattern is not None and not pattern.match(value):
        raise _refuse(f"the AWS upload profile's settings.{key} {value[:80]!r} is not valid")
    return value


def parse_upload(upload: object) -> AwsUpload | None:
    """The compose request's `upload`, or None without one (WeldrError when it cannot be honoured)."""
    if upload is None or upload == {}:
        return None
    if not isinstance(upload, dict):
        raise _refuse("upload must be an object: image_name, provider and settings")
    provider = upload.get("provider")
    if "profile" in upload:
        raise _refuse(
            "imgbuild keeps no provider profiles on the server: pass the profile as a TOML file "
            "(composer-cli compose start NAME TYPE IMAGE_NAME PROFILE.toml)"
        )
    if provider != "aws":
        raise _refuse(f"imgbuild cannot upload to provider {str(provider)[:40]!r}: only 'aws' is supported")
    unknown = sorted(set(upload) - {"image_name", "provider", "settings"})
    if unknown:
        raise _refuse(
            f"unknown upload field {unknown[0][:40]!r}: the fields are image_name, provider, settings"
        )
    image_name = upload.get("image_name")
    if not isinstance(image_name, str) or not _IMAGE_NAME.match(image_name):
        raise _refuse(
            "upload.image_name must be an AMI name: 3 to 128 letters, digits, spaces and ()[]./'@_-"
        )
    settings = upload.get("settings")
    if not isinstance(settings, dict):
        raise _refuse("the AWS upload profile needs a [settings] table")
    extra = sorted(set(settings) - _SETTINGS)
    if extra:
        raise _refuse(
            f"unknown AWS upload setting {extra[0][:40]!r}: the settings are {', '.join(sorted(_SETTINGS))}"
        )
    access = _text(settings, "accessKeyID", None, required=False)
    secret = _text(settings, "secretAccessKey", None, required=False)
    if bool(access) != bool(secret):
        raise _refuse("the AWS upload profile needs both accessKeyID and secretAccessKey, or neither")
    return AwsUpload(
        image_name=image_name,
        region=_text(settings, "region", _REGION, required=True),
        bucket=_text(settings, "bucket", _BUCKET, required=True),
        key=_text(settings, "key", _KEY, required=True),
        access_key_id=access,
        secret_access_key=secret,
        session_token=_text(settings, "sessionToken", None, required=False),
    )


def start_upload(compose_type: str, upload: AwsUpload) -> None:
    """Check that `upload` can follow a compose of `compose_type`, before the compose is queued.

    The one place to wire the AWS upload (branch `ami`) in: until then every AWS upload is refused here,
    so the compose route creates nothing.
    """
    if compose_type not in ("ami", "raw", "vhd"):
        raise WeldrError(COMPOSE_ERROR, f"an AWS upload needs an ami image, not {compose_type}")
    raise _refuse(AWS_UNAVAILABLE)
