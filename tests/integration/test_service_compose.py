"""The service running the real builder on the example OS: a compose cancelled while its disk is mounted
(nothing may be left behind). The compose through to a booting image is in tests/vm/test_service_boot.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.imagebuilds import leaked_resources
from tests.unit.test_service_support import EXAMPLE_BLUEPRINT, allowing, log_tail, running_service

if TYPE_CHECKING:
    from builder.example import ExampleImage


def test_cancel_a_real_compose_releases_everything(example_x86_64: ExampleImage, builder_tmp: Path) -> None:
    with running_service(builder_tmp / "state", allow_refs=allowing(example_x86_64.reference), grace=60) as (
        _,
        cli,
    ):
        cli.push(EXAMPLE_BLUEPRINT)
        compose_id = cli.start_ok("example", "raw", example_x86_64.reference)
        deadline = time.monotonic() + 900
        while '"stage": "ostree.deploy"' not in cli.log(compose_id):  # its disk is mounted by then
            assert cli.info(compose_id)["queue_status"] in ("WAITING", "RUNNING"), log_tail(cli, compose_id)
            assert time.monotonic() < deadline, log_tail(cli, compose_id)
            time.sleep(0.2)
        answer = cli.raw("DELETE", f"/api/v1/compose/cancel/{compose_id}")
        assert answer.json() == {"uuid": compose_id, "status": True}
        info = cli.info(compose_id)
        assert info["queue_status"] == "FAILED" and info["reason"] == "canceled by request"
        assert not list((builder_tmp / "state" / "composes" / compose_id / "output").glob("*.raw"))
    assert leaked_resources(builder_tmp) == []
