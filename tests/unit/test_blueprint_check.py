"""`imgbuild blueprint check` and `imgbuild plan` agree on every blueprint: check runs the checks the
planner makes of a blueprint on its own (disk layouts, filesystems), so a blueprint check calls valid is
never refused by plan for its layout (issue 12: disk-layout.toml was "valid", then plan refused it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.blueprint import load_blueprint
from builder.cli import main
from builder.errors import BlueprintError
from builder.plan import PlanOptions, Rootfs, plan
from tests.unit.test_plan import FACTS

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = sorted(
    [
        *(ROOT / "blueprints/examples").glob("*.toml"),
        *(ROOT / "tests/data").glob("*.toml"),
        *(ROOT / "tests/data/blueprints").glob("*.toml"),
    ],
    key=lambda path: path.name,
)


def _plan_refusal(path: Path, rootfs: Rootfs) -> str | None:
    try:
        blueprint = load_blueprint(str(path))
        # [customizations.iso] needs an ISO output and the installer settings the iso output (checks of a
        # blueprint with its outputs, which `blueprint check` does not know): such a blueprint is planned as
        # the outputs it is written for.
        isos = ["live-iso"] * (blueprint.iso is not None) + ["iso"] * (blueprint.installer is not None)
        types = isos or ["qcow2"]
        plan(FACTS, blueprint, types, PlanOptions(rootfs=rootfs))
    except BlueprintError as e:
        return e.message
    return None


@pytest.mark.parametrize("rootfs", [Rootfs.EXT4, Rootfs.BTRFS])
@pytest.mark.parametrize("path", BLUEPRINTS, ids=lambda path: path.name)
def test_check_and_plan_agree(path: Path, rootfs: Rootfs, capsys: pytest.CaptureFixture[str]) -> None:
    refusal = _plan_refusal(path, rootfs)
    code = main(["blueprint", "check", str(path), "--rootfs", rootfs.value, "--arch", "x86_64"])
    err = capsys.readouterr().err
    if refusal is None:
        assert code == 0, err
    else:
        assert code == 2 and f"imgbuild: error: {refusal}" in err


def test_the_lvm_example_is_refused_by_both(capsys: pytest.CaptureFixture[str]) -> None:
    """The case of the issue, named: both refuse, with the same line."""
    path = ROOT / "blueprints/examples/disk-layout.toml"
    refusal = _plan_refusal(path, Rootfs.EXT4)
    assert refusal is not None and "lvm" in refusal
    assert main(["blueprint", "check", str(path)]) == 2
    assert refusal in capsys.readouterr().err
