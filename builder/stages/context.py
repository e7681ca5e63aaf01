"""What stages of one build share: the work directory, the resource stack, and the values that flow from
one stage to the next (the imported commit, the disk and its partitions, the deployment, the outputs)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import StageFailed
from builder.source.access import RegistryAccess

if TYPE_CHECKING:
    from builder.disk.partition import Placed
    from builder.progress import Progress


@dataclass(frozen=True)
class Output:
    path: Path  # inside the work directory until the build succeeds
    format: str
    filename: str  # the final name in the output directory
    record: Mapping[str, Any] = field(default_factory=dict)  # what the target adds to result.json's entry


@dataclass
class BuildContext:
    workdir: Path
    cache: Path
    stack: ExitStack
    progress: Progress
    source_reference: str
    source_digest: str
    arch: str
    registry: RegistryAccess = field(
        default_factory=RegistryAccess
    )  # how container.import reaches a registry
    # Set by container.import:
    repo: Path | None = None
    commit: str | None = None
    image_refs: tuple[str, ...] = ()
    # Set by disk.partition:
    disk: Path | None = None
    partitions: dict[str, Placed] = field(default_factory=dict)
    # Set by ostree.deploy (the deployment's checksum-named directory, relative to the root filesystem):
    deployment: str | None = None
    outputs: list[Output] = field(default_factory=list)

    def start_pipeline(self) -> None:
        """Each pipeline builds its own disk and deployment; the import and the outputs carry over."""
        self.disk = None
        self.partitions = {}
        self.deployment = None

    # The manifest checker (builder/manifest_check.py) makes these failures impossible for a checked
    # manifest; they stay one-line errors, never a traceback, should a stage kind's declarations be wrong.
    def partition(self, name: str) -> Placed:
        try:
            return self.partitions[name]
        except KeyError:
            raise StageFailed(f"no partition named {name!r}: is disk.partition before this stage?") from None

    def require_disk(self) -> Path:
        if self.disk is None:
            raise StageFailed("no disk: the manifest must partition a disk first")
        return self.disk

    def require_commit(self) -> tuple[Path, str]:
        if self.repo is None or self.commit is None:
            raise StageFailed("no image imported: the manifest must start with container.import")
        return self.repo, self.commit

    def require_deployment(self) -> str:
        if self.deployment is None:
            raise StageFailed("no deployment: ostree.deploy must come before this stage")
        return self.deployment
