"""Progress reports: a bar on a terminal, plain lines otherwise, one JSON object per line for CI."""

from __future__ import annotations

import enum
import json
import sys
import time
from typing import Any, TextIO

from builder.sizefmt import human
from builder.sizefmt import rate as human_rate


class ProgressMode(enum.StrEnum):
    AUTO = "auto"
    TERM = "term"
    PLAIN = "plain"
    JSON = "json"


class Progress:
    """Stage-level progress. JSON events go to stdout (machine-readable); everything else to stderr."""

    def __init__(
        self, mode: ProgressMode = ProgressMode.AUTO, *, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        if mode is ProgressMode.AUTO:
            mode = ProgressMode.TERM if self.err.isatty() else ProgressMode.PLAIN
        self.mode = mode
        self._start = time.monotonic()
        self._line_open = False
        # phase -> (started, last report, bytes already done at the start: reused layers are not read)
        self._transfer: dict[str, tuple[float, float, int]] = {}
        self._finished: dict[str, int] = {}  # phase -> the bytes its last (complete) report showed

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._start, 3)

    def _emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": self._elapsed(), **fields}
        self.out.write(json.dumps(record, sort_keys=False) + "\n")
        self.out.flush()

    def _bar(self, index: int, total: int, text: str) -> None:
        width = 24
        filled = width * index // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        self.err.write(f"\r\x1b[K[{bar}] {index}/{total} {text} ({self._elapsed():.0f} s)")
        self.err.flush()
        self._line_open = True

    def _close_line(self) -> None:
        if self._line_open:
            self.err.write("\n")
            self._line_open = False

    def stage_started(self, index: int, total: int, kind: str, stage_id: str) -> None:
        if self.mode is ProgressMode.JSON:
            self._emit("stage-start", index=index, total=total, stage=kind, id=stage_id)
        elif self.mode is ProgressMode.TERM:
            self._bar(index - 1, total, kind)
        else:
            self.err.write(f"imgbuild: [{index}/{total}] {kind}\n")
            self.err.flush()

    def stage_finished(self, index: int, total: int, kind: str, seconds: float, cached: bool) -> None:
        if self.mode is ProgressMode.JSON:
            self._emit(
                "stage-end", index=index, total=total, stage=kind, seconds=round(seconds, 3), cached=cached
            )
        elif self.mode is ProgressMode.TERM:
            self._bar(index, total, kind + (" (cached)" if cached else ""))
        else:
            note = "cached" if cached else f"{seconds:.1f} s"
            self.err.write(f"imgbuild: [{index}/{total}] {kind} done ({note})\n")
            self.err.flush()

    def transfer(self, what: str, done: int, total: int, sent: int, rate: float) -> None:
        """Bytes of a transfer: `done` of `total` handled, `sent` of them sent, at `rate` bytes/s."""
        if self.mode is ProgressMode.JSON:
            self._emit("transfer", what=what, done=done, total=total, sent=sent, rate=round(rate))
            return
        text = f"{what} {human(done)} of {human(total)}, sent {human(sent)} at {human_rate(rate)}"
        if self.mode is ProgressMode.TERM:
            filled = 24 * done // max(total, 1)
            self.err.write(f"\r\x1b[K[{'#' * filled}{'-' * (24 - filled)}] {text}")
            self._line_open = True
        else:
            self.err.write(f"imgbuild: {text}\n")
            self.err.flush()

    def bytes_done(self, phase: str, done: int, total: int) -> None:
        """Bytes done of a long phase (the fetch, the import), with the rate: at most one report a second
        (one every five in plain mode), and always the last one. `total` 0: not known (yet)."""
        now = time.monotonic()
        if phase not in self._transfer:
            self._transfer[phase] = (now, now, done)  # the first call starts the clock
            if done < total or total == 0:
                return
        started, last, initial = self._transfer[phase]
        if done >= total > 0 and self._finished.get(phase) == done:
            return  # the end was reported already
        interval = 5.0 if self.mode is ProgressMode.PLAIN else 1.0
        if (done < total or total == 0) and now - last < interval:
            return
        self._transfer[phase] = (started, now, initial)
        if done >= total > 0:
            self._finished[phase] = done
        rate = (done - initial) / max(now - started, 1e-3)
        if self.mode is ProgressMode.JSON:
            self._emit("bytes", phase=phase, done=done, total=total, rate=round(rate))
            return
        of = f" of {human(total)}" if total else ""
        text = f"{phase}: {human(done)}{of}, {human_rate(rate)}"
        if self.mode is ProgressMode.TERM:
            self.err.write(f"\r\x1b[K{text}")
            self._line_open = True
        else:
            self.err.write(f"imgbuild: {text}\n")
        self.err.flush()

    def phase_finished(self, phase: str, seconds: float) -> None:
        """A part of a stage (fetch, import...) and its wall time, so that users see where time goes."""
        if self.mode is ProgressMode.JSON:
            self._emit("phase-end", phase=phase, seconds=round(seconds, 3))
        else:
            self.message(f"{phase} done ({seconds:.1f} s)")

    def message(self, text: str) -> None:
        if self.mode is ProgressMode.JSON:
            self._emit("message", text=text)
        else:
            self._close_line()
            self.err.write(f"imgbuild: {text}\n")
            self.err.flush()

    def finished(self, result: dict[str, Any]) -> None:
        if self.mode is ProgressMode.JSON:
            self._emit("build-end", status="ok", result=result)
            return
        self._close_line()
        for output in result.get("outputs", []):
            self.err.write(
                f"imgbuild: wrote {output['path']} ({output['format']}, {human(output['size'])})\n"
            )
        self.err.flush()

    def uploaded(self, record: dict[str, Any]) -> None:
        """An upload's result: a JSON event, or closing the progress line (the command prints the ids)."""
        if self.mode is ProgressMode.JSON:
            self._emit("upload-end", status="ok", result=record)
        else:
            self._close_line()

    def failed(self, message: str) -> None:
        if self.mode is ProgressMode.JSON:
            self._emit("build-end", status="failed", error=message)
        else:
            self._close_line()
