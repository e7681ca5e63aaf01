"""What an image must be signed by: the containers policy for the fetch, an ostree remote for the commit.

It travels in the build manifest (the container.import stage's options), so that `imgbuild build MANIFEST`
verifies exactly as the plan did, and --install-remote's files travel in the ostree.deploy stage's options.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.ostree.remotes import OstreeRemote, image_config, image_key_path
from builder.source.policy import Policy


@dataclass(frozen=True)
class Trust:
    policy: Policy = field(default_factory=Policy)
    remote: OstreeRemote | None = None  # verifies the image's ostree commit
    install_remote: bool = False  # write the remote's configuration and keys into the image

    def import_options(self) -> dict[str, Any]:
        """The container.import options that say how to verify (empty for the defaults)."""
        options: dict[str, Any] = {}
        if self.policy.path is not None:
            options["policy"] = str(self.policy.path)
        if self.policy.registries_d is not None:
            options["registries_d"] = str(self.policy.registries_d)
        if self.remote is not None:
            options["ostree_remote"] = {
                "name": self.remote.name,
                "gpg_keys": [str(k) for k in self.remote.gpg_keys],
                "source": self.remote.source,
                "gpg_verify": self.remote.gpg_verify,
                "ed25519": self.remote.ed25519,
            }
        return options

    @classmethod
    def from_import_options(cls, options: Any) -> Trust:
        remote = None
        spec = options.get("ostree_remote")
        if spec is not None:
            remote = OstreeRemote(
                spec["name"],
                tuple(Path(k) for k in spec["gpg_keys"]),
                spec["source"],
                gpg_verify=spec["gpg_verify"],
                ed25519=spec["ed25519"],
            )
        policy = Policy(
            Path(options["policy"]) if "policy" in options else None,
            Path(options["registries_d"]) if "registries_d" in options else None,
        )
        return cls(policy, remote)

    def deploy_options(self) -> dict[str, Any]:
        """The ostree.deploy options that install the remote into the image (empty unless asked)."""
        if not self.install_remote or self.remote is None:
            return {}
        files = {f"/etc/ostree/remotes.d/{self.remote.name}.conf": image_config(self.remote).encode()}
        for i, key in enumerate(self.remote.gpg_keys):
            files[image_key_path(self.remote, i)] = key.read_bytes()
        return {
            "install_remote": {
                "name": self.remote.name,
                "files": {path: base64.b64encode(data).decode() for path, data in sorted(files.items())},
            }
        }
