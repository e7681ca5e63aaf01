"""skopeo, the one tool that talks to registries and reads image archives.

Every call has a deadline: a registry that cannot be reached fails in well under a minute, with one line
naming the reference and skopeo's own reason. Blob digest failures that skopeo itself detects while copying
become VerificationError naming the blob.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from builder import run
from builder.arch import Arch
from builder.errors import CommandFailed, SourceError, VerificationError
from builder.source.policy import Policy
from builder.source.reference import Reference, Transport

# skopeo's own deadline, and ours a little later in case skopeo hangs before it arms its timer.
COMMAND_TIMEOUT_S = 45
RUN_TIMEOUT_S = 55
# A copy moves whole layers: its deadline is only the last resort against a hung process.
COPY_TIMEOUT_S = 6 * 3600

_FATAL_MSG = re.compile(r'level=fatal msg="(?P<msg>(?:[^"\\]|\\.)*)"')
_PARSING_PREFIX = re.compile(r'^Error parsing image name "[^"]*": ')
_DIGEST_MISMATCH = re.compile(
    r"Digest did not match, expected (sha256:[0-9a-f]{64}), got (sha256:[0-9a-f]{64})"
)
_CONFIG_MISMATCH = re.compile(r"reading config blob (sha256:[0-9a-f]{64})")
_SIZE_MISMATCH = re.compile(r"(sha256:[0-9a-f]{64}).*(?:size|length)", re.IGNORECASE)
# containers/image's refusal by the signature policy (copy.Image checks it before any layer is copied).
_POLICY_REFUSAL = re.compile(r"Source image rejected: (?P<why>.*)")


class PolicyRefused(VerificationError):
    """The containers signature policy does not accept the image."""


def skopeo_reason(stderr_tail: str) -> str:
    """skopeo's fatal message, without its logrus decoration."""
    messages = [m["msg"] for m in _FATAL_MSG.finditer(stderr_tail)]
    if messages:
        # "Error parsing image name "docker://...": " repeats the reference the caller already names.
        return _PARSING_PREFIX.sub("", messages[-1].replace('\\"', '"'))
    lines = [line.strip() for line in stderr_tail.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output on stderr"


def _hint_for(ref: Reference, reason: str) -> str:
    lowered = reason.lower()
    if ref.transport.is_local:
        return "check that the file or directory exists and is an image of that kind"
    if "unauthorized" in lowered or "authentication" in lowered or "denied" in lowered:
        return "log in with `skopeo login` or pass --authfile (REGISTRY_AUTH_FILE is honoured)"
    if "manifest unknown" in lowered or "not found" in lowered:
        return "check the repository name and tag"
    if "http response to https client" in lowered or "certificate" in lowered:
        return "for a registry without TLS (e.g. on loopback) pass --tls-verify=false"
    return "check the network and the registry name; imgbuild does not retry"


@dataclass(frozen=True)
class Skopeo:
    """How to reach images: credentials and TLS. Pure configuration; each method runs skopeo once."""

    authfile: Path | None = None
    tls_verify: bool = True
    policy: Policy = field(default_factory=Policy)

    def _global_args(self, arch: Arch | None, *, deadline: bool = True) -> list[str]:
        # Never --insecure-policy: the signature policy applies to every copy (builder.source.policy).
        # The policy file is always named, so that skopeo enforces the one imgbuild describes.
        args = ["skopeo", "--policy", str(self.policy.file())]
        if self.policy.registries_d is not None:
            args += ["--registries.d", str(self.policy.registries_d)]
        if deadline:
            args += ["--command-timeout", f"{COMMAND_TIMEOUT_S}s"]
        if arch is not None:
            args += ["--override-arch", arch.oci, "--override-os", "linux"]
        return args

    def _source_args(self, ref: Reference, *, prefix: str) -> list[str]:
        if ref.transport is not Transport.REGISTRY:
            return []
        args = [f"--{prefix}tls-verify={'true' if self.tls_verify else 'false'}"]
        if self.authfile is not None:
            if not self.authfile.is_file():
                raise SourceError(
                    f"the auth file {self.authfile} does not exist",
                    hint="pass the containers auth.json written by `skopeo login` or `podman login`",
                )
            args += [f"--{prefix}authfile", str(self.authfile)]
        return args

    def _fail(self, ref: Reference, e: CommandFailed, what: str) -> SourceError:
        reason = skopeo_reason(e.stderr_tail)
        if e.returncode == -1:
            reason = f"no answer within {RUN_TIMEOUT_S} s"
        return SourceError(f"cannot {what} {ref}: {reason}", hint=_hint_for(ref, reason))

    def raw_manifest(self, ref: Reference) -> bytes:
        """The manifest (or index) exactly as the source holds it."""
        argv = [
            *self._global_args(None),
            "inspect",
            "--raw",
            "--retry-times",
            "0",
            *self._source_args(ref, prefix=""),
            ref.skopeo,
        ]
        try:
            return run.run(argv, timeout=RUN_TIMEOUT_S).stdout
        except CommandFailed as e:
            raise self._fail(ref, e, "read") from e

    def raw_config(self, ref: Reference, arch: Arch | None) -> bytes:
        """The image config of `ref` (of its `arch` instance when it is an index)."""
        argv = [
            *self._global_args(arch),
            "inspect",
            "--config",
            "--raw",
            "--retry-times",
            "0",
            *self._source_args(ref, prefix=""),
            ref.skopeo,
        ]
        try:
            return run.run(argv, timeout=RUN_TIMEOUT_S).stdout
        except CommandFailed as e:
            self._raise_verification(ref, e)
            raise self._fail(ref, e, "read the config of") from e

    def copy_to_layout(self, ref: Reference, layout: Path, tag: str, arch: Arch, digestfile: Path) -> str:
        """Copy one image into the OCI layout `layout` under `tag`; the digest of the manifest written.

        Blobs already in the layout are reused by skopeo without being read from the source again.
        """
        # skopeo's --command-timeout would cut a large download short: rely on its network timeouts.
        argv = [
            *self._global_args(arch, deadline=False),
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            "--dest-oci-accept-uncompressed-layers",
            # The OCI layout cannot store signatures: they are verified here, against the policy, and
            # dropped from the cached copy (which is never pushed anywhere).
            "--remove-signatures",
            "--digestfile",
            str(digestfile),
            *self._source_args(ref, prefix="src-"),
            ref.skopeo,
            f"oci:{layout}:{tag}",
        ]
        try:
            run.run(argv, timeout=COPY_TIMEOUT_S)
        except CommandFailed as e:
            self._raise_policy(ref, e)
            self._raise_verification(ref, e)
            raise self._fail(ref, e, "copy") from e
        return digestfile.read_text().strip()

    def _raise_policy(self, ref: Reference, e: CommandFailed) -> None:
        refusal = _POLICY_REFUSAL.search(skopeo_reason(e.stderr_tail))
        if refusal is not None:
            raise PolicyRefused(
                f"{ref.origin}: refused by the containers signature policy {self.policy.file()}: "
                f"{refusal['why']}",
                hint="fetch only images signed as the policy requires (see containers-policy.json(5); "
                "the signatures' location is set in registries.d, --registries-d)",
            ) from e

    @staticmethod
    def _raise_verification(ref: Reference, e: CommandFailed) -> None:
        reason = skopeo_reason(e.stderr_tail)
        hint = "the image is corrupt or was tampered with; fetch it again from a trusted source"
        mismatch = _DIGEST_MISMATCH.search(reason)
        if mismatch is not None:
            raise VerificationError(
                f"blob {mismatch[1]} of {ref} does not match its digest (its content hashes to "
                f"{mismatch[2]})",
                hint=hint,
            ) from e
        config = _CONFIG_MISMATCH.search(reason)
        if config is not None and "does not match" in reason:
            raise VerificationError(
                f"config {config[1]} of {ref} does not match its digest", hint=hint
            ) from e
        size = _SIZE_MISMATCH.search(reason)
        if size is not None and ("expected" in reason or "mismatch" in reason):
            raise VerificationError(
                f"blob {size[1]} of {ref} does not have its size: {reason}", hint=hint
            ) from e
