"""Hand-edited manifests that are wrong, and a damaged cache record, through the real CLI: a wrong manifest is
one line naming the path and exit 2, before anything is attached, mounted or written; a damaged import record
is reported and the import redone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builder import manifest as manifest_mod
from builder.example import ExampleImage
from builder.paths import cache_dir
from tests.imagebuilds import imgbuild, leaked_resources
from tests.unit.test_manifest_check import (
    _missing_import,
    _swap_deploy_and_partition,
    _unknown_mount,
    _unknown_partition,
    _wrong_source,
)

BREAKAGES: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_swap_deploy_and_partition, "ostree.deploy needs a disk, which no earlier stage makes"),
    (_unknown_partition, ".options.partition: no partition 'nosuch'"),
    (_unknown_mount, ".options.mounts[1].partition: no filesystem on partition 'bios'"),
    (_missing_import, "ostree.deploy needs the image's commit, which no earlier stage makes"),
    (_wrong_source, "pipelines[0].stages[0].options.digest: 'sha256:cdcd"),
]


@pytest.fixture(scope="module")
def planned(example_x86_64: ExampleImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = tmp_path_factory.mktemp("plan") / "plan.json"
    imgbuild(["plan", "qcow2", example_x86_64.reference, "-o", manifest])
    return manifest


@pytest.mark.parametrize(("breakage", "fragment"), BREAKAGES, ids=[b.__name__ for b, _ in BREAKAGES])
def test_broken_manifest_is_one_line_and_exit_2(
    planned: Path, tmp_path: Path, breakage: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    doc = json.loads(planned.read_text())
    breakage(doc)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    out = tmp_path / "out"
    result = imgbuild(["build", broken, "--output", out, "--progress", "plain"], check=False)
    err = result.stderr.decode()
    lines = [line for line in err.splitlines() if not line.startswith("hint: ")]
    assert result.returncode == 2, err
    assert len(lines) == 1 and lines[0].startswith("imgbuild: error: invalid manifest at pipelines[0]"), err
    assert fragment in lines[0], err
    assert not out.exists()
    assert leaked_resources(tmp_path) == []


def test_damaged_import_record_is_redone(planned: Path, tmp_path: Path) -> None:
    """`imgbuild plan` recorded its import; a truncated record is reported and the import done again (the
    build then stops at the injected failure in stage 2: this test is about stage 1)."""
    record = cache_dir() / "stages" / f"{manifest_mod.load(planned).stage_ids()[0]}.json"
    whole = record.read_text()
    record.write_text(whole[: len(whole) // 2])
    out = tmp_path / "out"
    result = imgbuild(
        ["build", planned, "--output", out, "--progress", "plain"],
        env={"IMGBUILD_FAIL_STAGE": "2"},
        check=False,
    )
    err = result.stderr.decode() + result.stdout.decode()
    assert result.returncode == 1 and "Traceback" not in err, err
    assert f"{record} is damaged (JSONDecodeError" in err and "imported" in err, err
    assert "stage 2/" in err and "disk.partition" in err and "failure injected" in err, err
    assert json.loads(record.read_text())["commit"] == json.loads(whole)["commit"]
    assert leaked_resources(tmp_path) == [] and list(out.iterdir()) == []
