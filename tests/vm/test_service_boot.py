"""Blueprint submission end to end: a client speaking exactly as composer-cli does pushes a blueprint (with
a plain-text password), starts a qcow2 compose of the example image as `compose start-ostree --url REF`
does, waits, downloads the image, which boots to the self-test marker; the password is in no answer, tar
or state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from builder import run
from builder.example import SELFTEST_MARKER
from tests.imagebuilds import check_result, imgbuild, leaked_resources, sha256_file
from tests.unit.composer_cli import Commands
from tests.unit.test_service_support import EXAMPLE_BLUEPRINT, allowing, log_tail, running_service

SECRET = "plain-Text-Secret-4711"
PASSWORD_USER = f"""
[[customizations.user]]
name = "alice"
password = "{SECRET}"
"""

if TYPE_CHECKING:
    from builder.example import ExampleImage


def test_compose_of_the_example_image(example_x86_64: ExampleImage, builder_tmp: Path) -> None:
    with running_service(builder_tmp / "state", allow_refs=allowing(example_x86_64.reference)) as (_, cli):
        commands = Commands(cli)
        assert commands.push(EXAMPLE_BLUEPRINT + PASSWORD_USER) == {"status": True}
        started = commands.start_ostree("example", "qcow2", url=example_x86_64.reference)
        assert started["status"] is True, started
        compose_id = started["build_id"]
        status = cli.wait(compose_id, timeout=1800)
        assert status == "FINISHED", log_tail(cli, compose_id)

        download = builder_tmp / "download.qcow2"
        answer = cli.get(f"/api/v1/compose/image/{compose_id}")
        disposition = answer.headers["Content-Disposition"]
        assert disposition.startswith(f"attachment; filename={compose_id}-") and disposition.endswith(
            ".qcow2"
        )
        assert answer.headers["Content-Type"] == "application/x-qemu-disk"
        download.write_bytes(answer.body)
        assert int(answer.headers["Content-Length"]) == download.stat().st_size

        result = check_result(builder_tmp / "state" / "composes" / compose_id / "output" / "result.json")
        assert result["outputs"][0]["sha256"] == sha256_file(download)
        info = json.loads(run.run(["qemu-img", "info", "--output=json", download]).out)
        assert info["format"] == "qcow2"
        run.run(["qemu-img", "check", download])
        assert '"event": "build-end"' in cli.log(compose_id)
        results = commands.download("results", compose_id).body
        assert f"{compose_id}-".encode() in results and SECRET.encode() not in results
        for what in ("metadata", "logs"):
            assert SECRET.encode() not in commands.download(what, compose_id).body
        for path in (builder_tmp / "state").rglob("*"):
            if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:  # the results tar holds the image
                assert SECRET.encode() not in path.read_bytes(), path
    assert leaked_resources(builder_tmp) == []
    out = imgbuild(
        ["boot", download, "--firmware", "uefi", "--append", "imgbuild.selftest=1", "--timeout", "600"]
    ).out
    line = next((x for x in out.splitlines() if SELFTEST_MARKER in x), "")
    assert f"commit={result['commit']}" in line, out[-3000:]
