"""result.json's schema, the --progress json events and the exit codes: the machine-readable contract."""

from __future__ import annotations

import argparse
import copy
import io
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from builder import cli, results, run
from builder.errors import CommandFailed, ImgbuildError, StageFailed
from builder.progress import Progress, ProgressMode

GOOD: dict[str, Any] = {
    "imgbuild": "0.1.0",
    "source": {"reference": "oci-archive:/x/os.ociarchive", "digest": "sha256:" + "a" * 64, "arch": "x86_64"},
    "commit": "b" * 64,
    "manifest": "manifest.json",
    "outputs": [{"path": "disk.qcow2", "format": "qcow2", "size": 1234, "sha256": "c" * 64}],
    "seconds": 12.5,
}


def test_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(results.schema())
    assert results.problems(GOOD) == []


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("outputs.0.sha256", ..., "outputs/0"),
        ("outputs.0.sha256", "C" * 64, "outputs/0/sha256"),
        ("outputs.0.path", "../disk.qcow2", "outputs/0/path"),
        ("outputs.0.size", -1, "outputs/0/size"),
        ("outputs", [], "outputs"),
        ("source.digest", "a" * 64, "source/digest"),
        ("source.arch", "sparc", "source/arch"),
        ("commit", "HEAD", "commit"),
        ("seconds", ..., "(top)"),
        ("secret", "x", "(top)"),
    ],
)
def test_schema_refuses(path: str, value: Any, where: str) -> None:
    wrong = results.problems(_with(path, value))
    assert wrong and wrong[0].startswith(f"{where}: "), wrong


def test_output_entries_are_open_to_new_fields() -> None:
    # Other output kinds add fields (documented in docs/results.md); the required four keep their meaning.
    doc = _with("outputs.0.virtual_size", 10 << 30)
    doc["outputs"][0]["target"] = "aws"
    doc["outputs"][0]["something-new"] = {"any": "thing"}
    assert results.problems(doc) == []
    assert results.problems(_with("outputs.0.virtual_size", "10G")) != []


def test_progress_json_lines_are_documented_events() -> None:
    out = io.StringIO()
    progress = Progress(ProgressMode.JSON, out=out, err=io.StringIO())
    progress.stage_started(1, 2, "container.import", "abc")
    progress.stage_finished(1, 2, "container.import", 1.0, cached=True)
    progress.message("hello")
    progress.finished(GOOD)
    progress.failed("boom")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["stage-start", "stage-end", "message", "build-end", "build-end"]
    docs = (Path(__file__).resolve().parents[2] / "docs" / "results.md").read_text()
    for event in events:
        assert f"`{event['event']}`" in docs
        for field in event:
            assert f"`{field}`" in docs, field
    assert events[3]["result"] == GOOD and events[3]["status"] == "ok"


def _main_raising(error: BaseException, monkeypatch: pytest.MonkeyPatch) -> int:
    def fail(args: argparse.Namespace) -> int:
        raise error

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        p.add_argument("--debug", action="store_true")
        p.add_argument("--verbose", action="store_true")
        p.set_defaults(func=fail)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    return cli.main([])


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ImgbuildError("bad input"), 2),
        (StageFailed("stage 3/7 failed"), 1),
        (CommandFailed(("mkfs.ext4",), 1, "boom"), 1),
        (KeyboardInterrupt(), 130),
        (BrokenPipeError(), 141),
    ],
)
def test_exit_codes_are_stable(error: BaseException, code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _main_raising(error, monkeypatch) == code


def test_success_and_usage_errors(tmp_path: Path) -> None:
    good = tmp_path / "bp.toml"
    good.write_text('name = "x"\n')
    ok = run.run([sys.executable, "-m", "builder", "blueprint", "check", good], check=False)
    assert ok.returncode == 0, ok.stderr
    # argparse's own usage errors are user errors too.
    usage = run.run([sys.executable, "-m", "builder", "qcow2"], check=False)
    assert usage.returncode == 2


def test_internal_error_is_exit_1() -> None:
    # A bug (an exception that is no ImgbuildError) ends in a traceback and exit 1.
    code = (
        "import sys, builder.cli as c\n"
        "def boom(args): raise RuntimeError('bug')\n"
        "import argparse\n"
        "def parser():\n"
        "    p = argparse.ArgumentParser(); p.set_defaults(func=boom, debug=False, verbose=False); return p\n"
        "c.build_parser = parser\n"
        "sys.exit(c.main([]))\n"
    )
    crashed = run.run([sys.executable, "-c", code], check=False)
    assert crashed.returncode == 1
    assert b"RuntimeError: bug" in crashed.stderr
