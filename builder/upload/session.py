"""AWS clients from boto3's standard credential chain, and AWS errors as one-line UploadErrors.

Credentials are never taken from a flag: environment, shared config/credentials files (`--aws-profile`
picks a profile), container or instance role. Endpoints too: boto3 honours AWS_ENDPOINT_URL and its
per-service forms (AWS_ENDPOINT_URL_EC2, _EBS, _S3, _STS), which is how tests and AWS-compatible clouds work.
Error messages carry AWS's error code and message, never a key.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
import botocore.parsers
from botocore.config import Config

from builder.errors import UploadError
from builder.upload.settings import AwsSettings

CREDENTIAL_CODES = {
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
}
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403"}
CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or --aws-profile, or run where an instance "
    "or container role applies"
)
PERMISSIONS_HINT = "grant the IAM permissions listed in the README section 'Uploading to AWS'"


@dataclass(frozen=True)
class Clients:
    ec2: Any
    ebs: Any
    s3: Any
    sts: Any
    region: str


def make_clients(settings: AwsSettings) -> Clients:
    # botocore's debug log prints request headers, session tokens among them: never below INFO, even
    # with --debug.
    for name in ("boto3", "botocore", "urllib3", "s3transfer"):
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.INFO))
    try:
        session = boto3.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound as e:
        raise UploadError(
            f"AWS profile {settings.profile!r} not found",
            hint="list profiles with: aws configure list-profiles",
        ) from e
    config = Config(
        retries={"mode": "standard", "max_attempts": 4},
        max_pool_connections=settings.workers + 4,
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="imgbuild",
    )

    def client(name: str) -> Any:
        return session.client(name, config=config)

    return Clients(client("ec2"), client("ebs"), client("s3"), client("sts"), settings.region)


def _code_and_message(error: botocore.exceptions.ClientError) -> tuple[str, str]:
    info = error.response.get("Error", {})
    code = str(info.get("Code", "Unknown"))
    message = str(info.get("Message", ""))
    # Some endpoints answer a JSON API with an XML error body; botocore then reports the HTTP status as the
    # code and the body as the message.
    xml_code = re.search(r"<Code>([^<]+)</Code>", message)
    if xml_code:
        xml_message = re.search(r"<Message>([^<]*)</Message>", message)
        code, message = xml_code.group(1), xml_message.group(1) if xml_message else ""
    return code, " ".join(message.split())


def error_code(error: BaseException) -> str | None:
    if isinstance(error, botocore.exceptions.ClientError):
        return _code_and_message(error)[0]
    return None


def is_denied(error: BaseException) -> bool:
    return error_code(error) in DENIED_CODES


def explain(error: Exception, action: str) -> UploadError:
    """An AWS failure of `action` (e.g. 'ebs:StartSnapshot') as one line and a hint."""
    if isinstance(error, UploadError):
        return error
    if isinstance(
        error, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return UploadError("no AWS credentials found", hint=CREDENTIALS_HINT)
    if isinstance(error, botocore.exceptions.ClientError):
        code, message = _code_and_message(error)
        if code in CREDENTIAL_CODES:
            return UploadError(f"AWS rejected the credentials ({action}: {code})", hint=CREDENTIALS_HINT)
        if code in DENIED_CODES:
            return UploadError(f"AWS denied {action}: {message or code}", hint=PERMISSIONS_HINT)
        detail = f"{code}: {message}".rstrip(": ")
        return UploadError(
            f"{action} failed: {detail if len(detail) <= 300 else detail[:297] + '...'}",
            hint="the message is AWS's own; --debug shows where imgbuild was",
        )
    if isinstance(error, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return UploadError(
            f"cannot reach AWS for {action}: {_one_line(error)}",
            hint="check the network, --aws-region and AWS_ENDPOINT_URL*",
        )
    if isinstance(error, botocore.parsers.ResponseParserError):
        # An endpoint that answers with something other than the API (an HTML error page, a proxy).
        return UploadError(
            f"{action} failed: the endpoint's answer is not an AWS API response",
            hint="the endpoint may not implement this call (test servers lack ImportSnapshot: drop "
            "--aws-bucket to use the EBS direct APIs); --debug shows the answer",
        )
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return UploadError(f"{action} failed: {_one_line(error)}", hint="--debug shows where imgbuild was")
    raise error


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
