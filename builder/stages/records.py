"""The cache's stage records: what a cacheable stage left, under its stage id (`<cache>/stages/<id>.json`).

The one owner of these files: the runner (after a cacheable stage ran) and the planner's import (`imgbuild
plan`, which imports before planning) both write through here, atomically (beside, then renamed), so a
record is whole or absent. A record that cannot be read (truncated by a crash of an older version, edited,
disk trouble) is reported, removed, and treated as absent: the stage runs again instead of failing every
later build.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.source.cache import write_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageRecords:
    cache: Path  # the imgbuild cache directory

    @property
    def directory(self) -> Path:
        return self.cache / "stages"

    def _path(self, stage_id: str) -> Path:
        if len(stage_id) != 64 or any(c not in "0123456789abcdef" for c in stage_id):
            raise ValueError(f"not a stage id: {stage_id!r}")
        return self.directory / f"{stage_id}.json"

    def read(self, stage_id: str) -> tuple[Mapping[str, Any] | None, str | None]:
        """(the record, None), (None, None) when there is none, or (None, why) for a damaged one (removed)."""
        path = self._path(stage_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, None
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            why = f"{path} is damaged ({e.__class__.__name__}: {e}); running the stage again"
        else:
            if isinstance(record, dict):
                return record, None
            why = f"{path} holds no record (a JSON {type(record).__name__}); running the stage again"
        log.warning("%s", why)
        path.unlink(missing_ok=True)
        return None, why

    def write(self, stage_id: str, record: Mapping[str, Any]) -> None:
        write_atomically(self._path(stage_id), json.dumps(record, sort_keys=True).encode())

    def discard(self, stage_id: str) -> None:
        self._path(stage_id).unlink(missing_ok=True)
