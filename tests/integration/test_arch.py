"""Architecture selection: an image for one architecture asked for as the other fails with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.example import ExampleImage
from tests.imagebuilds import imgbuild


@pytest.mark.parametrize(("image_arch", "asked"), [("aarch64", "x86_64"), ("x86_64", "aarch64")])
def test_mismatch_is_one_line(
    image_arch: str, asked: str, example_x86_64: ExampleImage, example_aarch64: ExampleImage, tmp_path: Path
) -> None:
    example = example_aarch64 if image_arch == "aarch64" else example_x86_64
    argvs: list[list[str | Path]] = [
        ["qcow2", example.reference, "--arch", asked, "--output", tmp_path / "out"],
        ["plan", "raw", example.reference, "--arch", asked],
        ["inspect", example.reference, "--arch", asked],
    ]
    for argv in argvs:
        result = imgbuild(argv, check=False)
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert "Traceback" not in err
        assert err.startswith("imgbuild: error: ") and image_arch in err and asked in err.splitlines()[0], err
        assert len([line for line in err.splitlines() if not line.startswith("hint:")]) == 1, err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_default_arch_is_the_images(example_aarch64: ExampleImage) -> None:
    plan = imgbuild(["plan", "qcow2", example_aarch64.reference, "--output-format", "json"]).out
    assert '"arch": "aarch64"' in plan and "arm64-efi" in plan and "ttyAMA0" in plan
