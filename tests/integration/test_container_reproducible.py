"""make container is reproducible: built again from the same inputs, the image has the same digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder import container_image, paths


def test_same_inputs_same_digest(
    tmp_path: Path, imgbuild_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = json.loads((paths.PROJECT_ROOT / ".cache" / "container" / "manifest.json").read_text())
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(cached["epoch"]))
    again = container_image.build(tmp_path, force=True)
    assert again.key == cached["key"] and not again.cached
    assert (again.digest, again.config_digest) == (cached["digest"], cached["config"])
