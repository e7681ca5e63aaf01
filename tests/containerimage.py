"""Helpers for the tests that run imgbuild's container image with podman (make container).

Not a test module. podman runs with the settings the Debian 12 build machines need:
the runc runtime (crun refuses their hybrid cgroups), cgroupfs, and a containers.conf without default
ulimits (they cannot be set here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder import run
from builder.example import ExampleImage

PODMAN_OPTIONS = ("--runtime", "runc", "--cgroup-manager=cgroupfs")
HOST_STORAGE = "/var/lib/containers/storage"


@dataclass(frozen=True)
class Podman:
    conf: Path  # containers.conf

    @property
    def command(self) -> str:
        """The podman command line, for scripts that take it as a string (IMGBUILD_PODMAN)."""
        return " ".join(("podman", *PODMAN_OPTIONS))

    @property
    def env(self) -> dict[str, str]:
        return {"CONTAINERS_CONF": str(self.conf)}

    def run(self, *args: str | Path, timeout: float = 1800) -> run.Completed:
        return run.run(["podman", *PODMAN_OPTIONS, *args], env=self.env, check=False, timeout=timeout)


def podman(workdir: Path) -> Podman:
    conf = workdir / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return Podman(conf)


def into_host_storage(example: ExampleImage, name: str) -> str:
    """Copy the example OS image into the host's containers-storage, as `podman build` would leave it."""
    run.run(["skopeo", "copy", "--quiet", f"oci-archive:{example.path}", f"containers-storage:{name}"])
    return f"containers-storage:{name}"
