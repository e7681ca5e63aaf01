"""CPU architectures, in the names imgbuild uses (x86_64, aarch64) and OCI's (amd64, arm64)."""

from __future__ import annotations

import enum
import platform

from builder.errors import ImgbuildError

_OCI = {"x86_64": "amd64", "aarch64": "arm64"}
_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


class Arch(enum.StrEnum):
    X86_64 = "x86_64"
    AARCH64 = "aarch64"

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Accepts imgbuild, OCI/Go and Debian spellings (x86_64/amd64, aarch64/arm64)."""
        name = _ALIASES.get(text.strip().lower())
        if name is None:
            raise ImgbuildError(
                f"unsupported architecture {text!r}", hint="use x86_64 (amd64) or aarch64 (arm64)"
            )
        return cls(name)

    @classmethod
    def host(cls) -> Arch:
        return cls.parse(platform.machine())

    @property
    def oci(self) -> str:
        """The GOARCH name used in OCI image configs and indexes."""
        return _OCI[self.value]

    @property
    def debian(self) -> str:
        return _OCI[self.value]
