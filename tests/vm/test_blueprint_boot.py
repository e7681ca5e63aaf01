"""The image built from the end-to-end blueprint boots to the self-test marker (its kernel.append carries
imgbuild.selftest=1, so no argument is added at boot)."""

from __future__ import annotations

from pathlib import Path

from builder.example import SELFTEST_MARKER, ExampleImage
from tests.imagebuilds import ImageBuilds, imgbuild

BLUEPRINT = Path(__file__).resolve().parents[1] / "data" / "e2e-blueprint.toml"


def test_blueprint_image_boots(example_x86_64: ExampleImage, images: ImageBuilds) -> None:
    built = images.get("qcow2", example_x86_64.reference, "--blueprint", str(BLUEPRINT))
    out = imgbuild(["boot", built.image, "--firmware", "uefi", "--timeout", "600"]).out
    line = next((x for x in out.splitlines() if SELFTEST_MARKER in x), "")
    assert f"commit={built.result['commit']}" in line, out[-3000:]
    assert "systemd.show_status=1" in line
