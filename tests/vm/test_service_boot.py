"""Blueprint submission end to end: a client speaking exactly as composer-cli does pushes a blueprint,
starts a qcow2 compose of the example image, waits, downloads the image, which boots to the self-test
marker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from builder import run
from builder.example import SELFTEST_MARKER
from tests.imagebuilds import check_result, imgbuild, leaked_resources, sha256_file
from tests.unit.test_service_support import EXAMPLE_BLUEPRINT, log_tail, running_service

if TYPE_CHECKING:
    from builder.example import ExampleImage


def test_compose_of_the_example_image(example_x86_64: ExampleImage, builder_tmp: Path) -> None:
    with running_service(builder_tmp / "state") as (_, cli):
        assert cli.push(EXAMPLE_BLUEPRINT).json() == {"status": True}
        compose_id = cli.start_ok("example", "qcow2", example_x86_64.reference)
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
    assert leaked_resources(builder_tmp) == []
    out = imgbuild(
        ["boot", download, "--firmware", "uefi", "--append", "imgbuild.selftest=1", "--timeout", "600"]
    ).out
    line = next((x for x in out.splitlines() if SELFTEST_MARKER in x), "")
    assert f"commit={result['commit']}" in line, out[-3000:]
