"""Progress.transfer (bytes and rate of a long phase) and Progress.phase_finished, in each mode."""

from __future__ import annotations

import io
import json

from builder.progress import Progress, ProgressMode


def test_json_reports_bytes_rate_and_phases() -> None:
    out, err = io.StringIO(), io.StringIO()
    progress = Progress(ProgressMode.JSON, out=out, err=err)
    # The first call starts the clock (bytes already done, reused layers, are not counted in the rate).
    progress.bytes_done("import", 10 << 20, 100 << 20)
    progress.bytes_done("import", 20 << 20, 100 << 20)  # within the second: not reported
    progress.bytes_done("import", 100 << 20, 100 << 20)  # the last one always is
    progress.phase_finished("fetch", 1.25)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e.get("done")) for e in events] == [("bytes", 100 << 20), ("phase-end", None)]
    assert events[0]["total"] == 100 << 20 and events[0]["rate"] > 0
    assert events[1] == {"event": "phase-end", "time": events[1]["time"], "phase": "fetch", "seconds": 1.25}
    assert err.getvalue() == ""


def test_plain_lines() -> None:
    err = io.StringIO()
    progress = Progress(ProgressMode.PLAIN, out=io.StringIO(), err=err)
    progress.bytes_done("import", 0, 1024 << 20)  # starts the clock
    progress._transfer["import"] = (0.0, 0.0, 0)  # as if started long ago: the next report is due
    progress.bytes_done("import", 512 << 20, 1024 << 20)
    progress.bytes_done("import", 1024 << 20, 1024 << 20)
    progress.phase_finished("import: merge", 0.5)
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("imgbuild: import: 512 MiB of 1 GiB, ") and lines[0].endswith("/s")
    assert lines[1].startswith("imgbuild: import: 1 GiB of 1 GiB")
    assert lines[2] == "imgbuild: import: merge done (0.5 s)"


def test_bytes_done_before_the_start_do_not_inflate_the_rate() -> None:
    """Reused layers count as done at once: the rate covers only what was read (it showed 62719 MiB/s)."""
    out = io.StringIO()
    progress = Progress(ProgressMode.JSON, out=out, err=io.StringIO())
    progress.bytes_done("import", 60 << 20, 100 << 20)
    started = progress._transfer["import"][0]
    progress._transfer["import"] = (started - 4.0, started - 4.0, 60 << 20)  # 4 s ago, 60 MiB reused
    progress.bytes_done("import", 100 << 20, 100 << 20)
    (event,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert event["rate"] <= (40 << 20) / 4.0 * 1.01
