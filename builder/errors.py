"""Errors that reach the user.

An ImgbuildError is a user-facing failure: the CLI prints its message on one line, then its hint, and exits
with `exit_code` (2 for a user mistake) without a traceback (`--debug` shows one). Anything else that escapes
is a bug and ends in a traceback.
"""

from __future__ import annotations


class ImgbuildError(Exception):
    """A failure the user can act on: bad input, missing tool, no space..."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class BadReference(ImgbuildError):
    """A container reference that cannot be parsed or resolved."""


class SourceError(ImgbuildError):
    """The image could not be fetched (network, authentication, missing image)."""


class VerificationError(ImgbuildError):
    """A blob does not match its digest, size or diff_id."""


class NotBootable(ImgbuildError):
    """The image carries neither an ostree commit nor a kernel."""


class SecureBootUnavailable(ImgbuildError):
    """--secure-boot require, and the image's boot chain cannot boot with Secure Boot enforced."""


class ArchMismatch(ImgbuildError):
    """The image's architecture differs from the one asked for."""


class ImportFailure(ImgbuildError):
    """A layer could not be imported into the ostree repository (hostile or malformed content)."""


class BlueprintError(ImgbuildError):
    """A blueprint that does not parse, validate or apply."""


class ManifestError(ImgbuildError):
    """A manifest that does not validate."""


class ToolMissing(ImgbuildError):
    """A program imgbuild needs is not installed."""


class NeedsRoot(ImgbuildError):
    """The operation needs root (loop devices, mounts, ostree admin)."""


class StageFailed(ImgbuildError):
    """A build stage failed; the message names the stage."""

    exit_code = 1


class CommandFailed(ImgbuildError):
    """A program run through builder.run exited non-zero."""

    exit_code = 1

    def __init__(self, argv: tuple[str, ...], returncode: int, stderr_tail: str, *, hint: str | None = None):
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tail = stderr_tail.strip().splitlines()
        last = tail[-1] if tail else "no output on stderr"
        super().__init__(f"{argv[0]} failed (exit {returncode}): {last}", hint=hint)


class UploadError(ImgbuildError):
    """A cloud upload that cannot start or did not finish (credentials, permissions, network, quota)."""
