"""The wheel carries every data file imgbuild reads at run time, and nothing of the checkout's tests."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.packaging import build_wheel, clean_copy, tracked_files

PACKAGES = ("builder/", "targets/", "blueprints/")


def test_wheel_carries_every_package_file(tmp_path: Path) -> None:
    wheel = build_wheel(clean_copy(tmp_path / "src"), tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {name for name in tracked_files() if name.startswith(PACKAGES)}
    # Data files too (schemas, stage schemas, example blueprints): nothing the code reads is left behind.
    assert {n for n in expected if not n.endswith(".py")} >= {
        "blueprints/schema.json",
        "builder/manifest.schema.json",
        "builder/schemas/result.schema.json",
        "builder/stages/schemas/ostree.deploy.json",
        "targets/qcow2.json",  # a target's schema lives beside its module
    }
    assert expected - names == set()
    assert not any(n.startswith(("tests/", "examples/", "scripts/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "imgbuild = builder.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
