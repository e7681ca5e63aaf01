"""The containers signature policy (containers-policy.json(5)), which skopeo enforces on every copy.

imgbuild never passes `--insecure-policy`: skopeo applies the policy (`--policy FILE`, else
`$HOME/.config/containers/policy.json`, else `/etc/containers/policy.json`) and registries.d (where the
signatures of simple signing live, and sigstore's settings) when it copies an image into the cache, and it
checks the signatures before it copies a single layer. This module only reads the policy to say which
requirement applies to an image (for `imgbuild inspect` and `ostree-image-signed:`), and to know when a
cached image may be used without asking skopeo again: only when the policy accepts anything, everywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import SourceError
from builder.source.reference import Reference, Transport

SYSTEM_POLICY = Path("/etc/containers/policy.json")
ACCEPT_ANYTHING = "insecureAcceptAnything"


@dataclass(frozen=True)
class Policy:
    path: Path | None = None  # --policy FILE; None: skopeo's own default
    registries_d: Path | None = None  # --registries-d DIR; None: skopeo's own default

    def file(self) -> Path:
        if self.path is not None:
            return self.path
        user = Path(os.environ.get("HOME", "/nonexistent")) / ".config/containers/policy.json"
        return user if user.is_file() else SYSTEM_POLICY

    def check_paths(self) -> None:
        if self.path is not None and not self.path.is_file():
            raise SourceError(
                f"the signature policy {self.path} does not exist",
                hint="pass a containers-policy.json(5) file",
            )
        if self.registries_d is not None and not self.registries_d.is_dir():
            raise SourceError(
                f"the registries.d directory {self.registries_d} does not exist",
                hint="pass a directory of containers-registries.d(5) files",
            )

    def _load(self) -> dict[str, Any] | None:
        try:
            document = json.loads(self.file().read_text())
        except (OSError, ValueError):
            return None  # skopeo reads it too, and says what is wrong with it
        return document if isinstance(document, dict) else None

    def accepts_anything(self) -> bool:
        """Every requirement in the policy is insecureAcceptAnything (so no signature can matter)."""
        document = self._load()
        if document is None:
            return False
        lists = [document.get("default")]
        for scopes in (document.get("transports") or {}).values():
            lists += list((scopes or {}).values())
        return all(_only_accepts(reqs) for reqs in lists)

    def requirements(self, ref: Reference) -> tuple[str, list[dict[str, Any]]] | None:
        """(scope, requirements) that apply to `ref`, read the way containers/image resolves scopes."""
        document = self._load()
        if document is None:
            return None
        transport = "docker" if ref.transport is Transport.REGISTRY else str(ref.transport)
        scopes = ((document.get("transports") or {}).get(transport)) or {}
        for scope in _scopes(ref):
            if scope in scopes:
                return f"{transport} {scope}", list(scopes[scope])
        if "" in scopes:
            return f"{transport} default", list(scopes[""])
        return "default", list(document.get("default") or [])

    def describe(self, ref: Reference) -> str:
        found = self.requirements(ref)
        if found is None:
            return f"containers policy {self.file()}: unreadable here (skopeo enforced it)"
        scope, reqs = found
        return f"containers policy {self.file()} ({scope}): " + ", ".join(map(_describe, reqs))

    def requires_signature(self, ref: Reference) -> bool:
        found = self.requirements(ref)
        return found is not None and not _only_accepts(found[1])


def _only_accepts(requirements: Any) -> bool:
    return isinstance(requirements, list) and all(
        isinstance(r, dict) and r.get("type") == ACCEPT_ANYTHING for r in requirements
    )


def _scopes(ref: Reference) -> list[str]:
    """Most specific first: the image, then its repository, then each enclosing namespace or directory."""
    name = ref.name
    scopes: list[str] = []
    if ref.transport is Transport.REGISTRY:
        scopes.append(f"{name}@{ref.digest}" if ref.digest else f"{name}:{ref.tag or 'latest'}")
    elif ref.tag:
        scopes.append(f"{name}:{ref.tag}")
    parts = name.split("/")
    scopes += ["/".join(parts[:i]) for i in range(len(parts), 0, -1) if "/".join(parts[:i])]
    if ref.transport is not Transport.REGISTRY:
        scopes.append("/")
    return scopes


def _describe(requirement: dict[str, Any]) -> str:
    kind = str(requirement.get("type"))
    if kind == "signedBy":
        keys = requirement.get("keyPath") or ", ".join(requirement.get("keyPaths") or []) or "inline keys"
        return f"signedBy {requirement.get('keyType', 'GPGKeys')} {keys}"
    if kind == "sigstoreSigned":
        key = requirement.get("keyPath") or ("Fulcio" if requirement.get("fulcio") else "inline key")
        return f"sigstoreSigned {key}"
    return kind
