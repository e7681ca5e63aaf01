"""Blueprint submission end to end: a client speaking exactly as composer-cli does pushes a blueprint,
starts a qcow2 compose of the example image, waits, downloads the image, which boots to the self-test
marker."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from builder import run
from builder.example import SELFTEST_MARKER
from tests.imagebuilds import imgbuild, leaked_resources
from tests.unit.test_service_support import ComposerCli, running_service

if TYPE_CHECKING:
    from builder.example import ExampleImage

BLUEPRINT = """name = "example"
description = "the example OS, through the service"
version = "0.1.0"

[customizations]
hostname = "from-the-service"
"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _log_tail(cli: ComposerCli, compose_id: str) -> str:
    return "\n".join(cli.log(compose_id).splitlines()[-30:])


@pytest.fixture
def builder_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The builder's temporary directories (its mount points) under tmp_path, so leaks are found there."""
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(work))
    return tmp_path


def test_compose_of_the_example_image(example_x86_64: ExampleImage, builder_tmp: Path) -> None:
    with running_service(builder_tmp / "state") as (_, cli):
        assert cli.push(BLUEPRINT).json() == {"status": True}
        compose_id = cli.start_ok("example", "qcow2", example_x86_64.reference)
        status = cli.wait(compose_id, timeout=1800)
        assert status == "FINISHED", _log_tail(cli, compose_id)

        download = builder_tmp / "download.qcow2"
        answer = cli.get(f"/api/v1/compose/image/{compose_id}")
        disposition = answer.headers["Content-Disposition"]
        assert disposition.startswith(f"attachment; filename={compose_id}-") and disposition.endswith(
            ".qcow2"
        )
        assert answer.headers["Content-Type"] == "application/x-qemu-disk"
        download.write_bytes(answer.body)
        assert int(answer.headers["Content-Length"]) == download.stat().st_size

        result = json.loads(
            (builder_tmp / "state" / "composes" / compose_id / "output" / "result.json").read_text()
        )
        assert result["outputs"][0]["sha256"] == _sha256(download)
        info = json.loads(run.run(["qemu-img", "info", "--output=json", download]).out)
        assert info["format"] == "qcow2"
        run.run(["qemu-img", "check", download])
        assert '"event": "build-end"' in cli.log(compose_id)
    assert leaked_resources(builder_tmp) == []
    out = imgbuild(
        ["boot", download, "--firmware", "uefi", "--append", "imgbuild.selftest=1", "--timeout", "600"]
    ).out
    line = next((x for x in out.splitlines() if SELFTEST_MARKER in x), "")
    assert f"commit={result['commit']}" in line, out[-3000:]
