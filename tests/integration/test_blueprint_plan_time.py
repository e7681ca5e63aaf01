"""A blueprint is checked against the image when the build is planned, not after partitioning and deploying:
`imgbuild plan`, `imgbuild blueprint check --image` and `imgbuild FORMAT` refuse the same things with the
same line, and nothing is written. The example image masks hwclock.service (in /usr/lib) and apt-daily.timer
(in /etc), and has no unit no-such.service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.example import ExampleImage
from tests.imagebuilds import imgbuild, leaked_resources

REFUSED = [
    (
        '[customizations.services]\nenabled = ["hwclock.service"]\n',
        "customizations.services.enabled: hwclock.service is masked in the image",
    ),
    (
        '[customizations.services]\nenabled = ["apt-daily.timer"]\n',
        "customizations.services.enabled: apt-daily.timer is masked in the image",
    ),
    (
        '[customizations.services]\nenabled = ["no-such"]\n',
        "customizations.services.enabled: the image has no unit no-such.service",
    ),
    (
        '[customizations.services]\ndisabled = ["no-such"]\n',
        "customizations.services.disabled: the image has no unit no-such.service",
    ),
    ('[customizations.timezone]\ntimezone = "Mars/Olympus"\n', "the image has no time zone 'Mars/Olympus'"),
    ('[[customizations.user]]\nname = "x"\ngroups = ["nosuch"]\n', "group 'nosuch' of 'x' exists neither"),
    ('[[customizations.directories]]\npath = "/etc/hostname"\n', "/etc/hostname is a file in the image"),
    ('[[customizations.files]]\npath = "/etc/systemd"\n', "/etc/systemd is a directory in the image"),
]


def _error(stderr: bytes) -> str:
    """The one error line; a build's progress lines (fetch, import bytes) may come before it."""
    text = stderr.decode()
    lines = [line for line in text.splitlines() if line.startswith("imgbuild: error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize(("document", "refusal"), REFUSED, ids=[r for _, r in REFUSED])
def test_refused_at_plan_time(
    example_x86_64: ExampleImage, tmp_path: Path, document: str, refusal: str
) -> None:
    blueprint = tmp_path / "bp.toml"
    blueprint.write_text(document)
    ref = example_x86_64.reference
    out = tmp_path / "out"
    argvs: list[list[str | Path]] = [
        ["plan", "qcow2", ref, "--blueprint", blueprint],
        ["blueprint", "check", blueprint, "--image", ref],
        ["raw", ref, "--blueprint", blueprint, "--output", out],
    ]
    for argv in argvs:
        result = imgbuild(argv, check=False)
        assert result.returncode == 2, (argv, result.stderr)
        line = _error(result.stderr)
        assert line.startswith("imgbuild: error: ") and refusal in line, (argv, line)
    assert not out.exists()  # refused before the build started: nothing partitioned or written
    assert leaked_resources(tmp_path) == []


def test_masked_and_missing_units_build(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    """Disabling units the image masks keeps them masked (this ended in KeyError('WantedBy') in the build);
    masking a unit the image lacks works, as `systemctl mask` does. Built to the end."""
    blueprint = tmp_path / "bp.toml"
    blueprint.write_text(
        "[customizations.services]\n"
        'disabled = ["hwclock.service", "apt-daily.timer"]\nmasked = ["no-such.service"]\n'
    )
    ref = example_x86_64.reference
    check = imgbuild(["blueprint", "check", blueprint, "--image", ref])
    assert f"valid for {ref}" in check.stdout.decode()
    out = tmp_path / "out"
    result = imgbuild(["raw", ref, "--blueprint", blueprint, "--output", out, "--progress", "plain"])
    log = result.stderr.decode()
    assert "service hwclock.service: masked in the image, left masked" in log, log
    assert "service no-such.service: masked (/etc/systemd/system/no-such.service -> /dev/null)" in log, log
    assert json.loads((out / "result.json").read_text())["outputs"][0]["format"] == "raw"
    assert leaked_resources(tmp_path) == []


def test_hand_edited_manifest_blueprint_is_refused_before_partitioning(
    example_x86_64: ExampleImage, tmp_path: Path
) -> None:
    """`imgbuild build MANIFEST` with a blueprint edited into the manifest: ostree.customize's preflight
    checks it against the image as soon as container.import has run, before disk.partition."""
    blueprint = tmp_path / "bp.toml"
    blueprint.write_text('[customizations]\nhostname = "edited"\n')
    manifest = tmp_path / "plan.json"
    imgbuild(["plan", "raw", example_x86_64.reference, "--blueprint", blueprint, "-o", manifest])
    doc = json.loads(manifest.read_text())
    stages = doc["pipelines"][0]["stages"]
    customize = next(i for i, stage in enumerate(stages) if stage["type"] == "ostree.customize")
    stages[customize]["options"]["blueprint"]["customizations"]["services"] = {"enabled": ["hwclock.service"]}
    manifest.write_text(json.dumps(doc))
    out = tmp_path / "out"
    result = imgbuild(["build", manifest, "--output", out, "--progress", "plain"], check=False)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("imgbuild: error:")]
    assert errors == [
        f"imgbuild: error: stage {customize + 1}/{len(stages)} ostree.customize "
        f"(pipelines[0].stages[{customize}]) refused: "
        "customizations.services.enabled: hwclock.service is masked in the image "
        "(/usr/lib/systemd/system/hwclock.service)"
    ]
    assert "disk.partition" not in err, err  # the progress lines: it never started
    assert list(out.iterdir()) == [] and leaked_resources(tmp_path) == []
