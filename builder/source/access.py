"""How skopeo reaches a registry (the command line's --authfile and --tls-verify): not part of a manifest,
since they say how to reach an image, not which one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RegistryAccess:
    authfile: Path | None = None  # None: skopeo's default (REGISTRY_AUTH_FILE, the runtime dir's auth.json)
    tls_verify: bool = True
