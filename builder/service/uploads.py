"""Upload profiles in compose requests, as composer-cli sends them.

`composer-cli compose start NAME ami IMAGE_NAME PROFILE.toml` sends `"upload": {"image_name": ...,
"provider": "aws", "settings": {"accessKeyID", "secretAccessKey", "sessionToken"?, "bucket", "region",
"key"}}` (osbuild-composer's AWS upload settings). The five-argument form (`IMAGE_NAME PROVIDER PROFILE`)
names a profile stored on the server, which imgbuild has none of. Only AWS is a provider imgbuild can
upload to; every other one is refused, never dropped.

The credentials are secrets: an AwsUpload never shows them (repr, public()), and the service never stores
them; `public()` is what a compose may keep (the database's `upload` column). The queue holds the
credentials in memory from the request until the builder starts, and gives them only to that child's
environment (`child_env`); a service that restarts meanwhile has lost them and fails the compose.

A compose with an AWS upload runs the builder's `ami` command, the one the command line runs (`imgbuild ami
REF --aws-region R --aws-ami-name NAME`): it builds the raw disk, uploads it through the EBS direct APIs and
registers the AMI. The profile's `bucket` and `key` are accepted (composer-cli profiles always have them)
but not used: EBS direct needs no bucket and no `vmimport` role, and is faster than S3 + ImportSnapshot.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from builder.service.weldr import COMPOSE_ERROR, UPLOAD_COMPOSE_TYPES, WeldrError

UPLOAD_ERROR = "UploadError"
RESTARTED_REASON = "upload credentials are not kept across restarts; start the compose again"
# The service's own environment the builder keeps for an upload: where the AWS APIs are (test servers,
# AWS-compatible clouds) and which CA to trust for them. Never the service's own credentials.
_PASSED_ENV = ("AWS_CA_BUNDLE",)  # and every AWS_ENDPOINT_URL*

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
    if not access or not secret:
        # the service's own AWS identity is not lent to the users of its socket
        raise _refuse("the AWS upload profile needs settings.accessKeyID and settings.secretAccessKey")
    return AwsUpload(
        image_name=image_name,
        region=_text(settings, "region", _REGION, required=True),
        bucket=_text(settings, "bucket", _BUCKET, required=True),
        key=_text(settings, "key", _KEY, required=True),
        access_key_id=access,
        secret_access_key=secret,
        session_token=_text(settings, "sessionToken", None, required=False),
    )


def start_upload(compose_type: str, upload: AwsUpload | None) -> None:
    """Check that the compose type and the upload go together, before the compose is queued."""
    if upload is not None and compose_type not in UPLOAD_COMPOSE_TYPES:
        raise WeldrError(
            COMPOSE_ERROR,
            f"an AWS upload needs compose type ami, not {compose_type} "
            "(composer-cli compose start NAME ami IMAGE_NAME PROFILE.toml)",
        )
    if upload is None and compose_type in UPLOAD_COMPOSE_TYPES:
        # an ami compose is its upload; the disk alone is the raw compose type
        raise WeldrError(
            COMPOSE_ERROR,
            f"compose type {compose_type} needs an upload profile: composer-cli compose start NAME "
            f"{compose_type} IMAGE_NAME PROFILE.toml (for the disk alone, use compose type raw)",
        )


def builder_arguments(public: dict[str, str]) -> list[str]:
    """The builder's upload flags for a stored upload (its public part: no secret on a command line)."""
    return ["--aws-region", public["region"], "--aws-ami-name", public["image_name"]]


def child_env(upload: AwsUpload, environ: dict[str, str]) -> dict[str, str]:
    """The builder's AWS environment: the profile's credentials and the service's endpoints, nothing of
    the service's own AWS configuration (shared files, instance role)."""
    env = {
        name: value
        for name, value in environ.items()
        if name.startswith("AWS_ENDPOINT_URL") or name in _PASSED_ENV
    }
    env |= {
        "AWS_ACCESS_KEY_ID": upload.access_key_id,
        "AWS_SECRET_ACCESS_KEY": upload.secret_access_key,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if upload.session_token:
        env["AWS_SESSION_TOKEN"] = upload.session_token
    return env


def upload_id(compose_id: str) -> str:
    """The upload's id (composer-cli prints it after `compose start`): derived, so nothing more is stored."""
    return str(uuid.uuid5(uuid.UUID(compose_id), "aws-upload"))


def upload_entry(
    compose_id: str, created: float, public: dict[str, str], status: str, result: dict[str, Any] | None
) -> dict[str, object]:
    """An upload as osbuild-composer's Weldr API shows it in compose info and the compose lists (uuid,
    status, provider_name, image_name, creation_time, settings without credentials), and imgbuild's
    additions once it is done: the AMI and snapshot ids."""
    entry: dict[str, object] = {
        "uuid": upload_id(compose_id),
        "status": status,
        "provider_name": public.get("provider", "aws"),
        "image_name": public["image_name"],
        "creation_time": created,
        "settings": {key: public[key] for key in ("region", "bucket", "key") if key in public},
    }
    if result is not None:
        entry["ami"] = result.get("image_id")
        entry["snapshot_id"] = result.get("snapshot_id")
        entry["region"] = result.get("region")
    return entry
