"""Helpers for tests that build real disk images through the command line and look inside them."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import results, run

ROOT = Path(__file__).resolve().parents[1]


def imgbuild(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 1800,
) -> run.Completed:
    """Run the real CLI in a child process (python -m builder), as users do."""
    extra = {"PYTHONPATH": str(ROOT), **(env or {})}
    for name in ("IMGBUILD_CACHE", "IMGBUILD_EXAMPLES"):
        if name in os.environ and name not in extra:
            extra[name] = os.environ[name]
    result = run.run(
        [sys.executable, "-m", "builder", *map(str, args)], env=extra, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"imgbuild {' '.join(map(str, args))} exited {result.returncode}:\n"
            + result.stderr.decode(errors="replace")[-4000:]
        )
    if result.returncode == 0 and "--output" in map(str, args):
        output = Path(args[list(map(str, args)).index("--output") + 1])
        if (output / "result.json").exists():
            check_result(output / "result.json")
    return result


def check_result(path: Path) -> dict[str, Any]:
    """result.json of a build, after checking it against its schema (every build in the tests goes here)."""
    doc: dict[str, Any] = json.loads(path.read_text())
    wrong = results.problems(doc)
    assert not wrong, f"{path} does not match builder/schemas/result.schema.json:\n" + "\n".join(wrong)
    for output in doc["outputs"]:
        assert (path.parent / output["path"]).stat().st_size == output["size"], output
    return doc


@dataclass(frozen=True)
class Built:
    output: Path
    image: Path
    result: dict[str, Any]
    manifest: dict[str, Any]

    def target_file(self, target: str) -> Path:
        """The file the target `target` wrote (result.json's entry for it)."""
        entry = next(o for o in self.result["outputs"] if o.get("target") == target)
        return self.output / str(entry["path"])

    def stage_options(self, kind: str) -> dict[str, Any]:
        for pipeline in self.manifest["pipelines"]:
            for stage in pipeline["stages"]:
                if stage["type"] == kind:
                    return dict(stage["options"])
        raise KeyError(kind)


class ImageBuilds:
    """Builds each distinct (format, reference, options) once per test session.

    Thread-safe: the boot jobs of tests/bootpool.py build their image themselves (so that a failed build
    fails only its own tests, and a build overlaps another job's boot); builds run one at a time.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self._built: dict[tuple[str, ...], Built] = {}
        self._failed: dict[tuple[str, ...], AssertionError] = {}
        self._lock = threading.Lock()

    def get(self, fmt: str, reference: str, *options: str) -> Built:
        return self._build((fmt, reference, *options), [fmt, reference, *options])

    def multi(self, types: Sequence[str], reference: str, *options: str) -> Built:
        """One `imgbuild build --type A --type B ... REF` (once per session); `image`: the first output."""
        type_args = [arg for name in types for arg in ("--type", name)]
        return self._build(("build", *types, reference, *options), ["build", *type_args, reference, *options])

    def _build(self, key: tuple[str, ...], args: list[str]) -> Built:
        with self._lock:
            if key in self._failed:  # once per session, failures too: every test that needs it says why
                raise self._failed[key]
            if key not in self._built:
                output = self.base / f"build-{len(self._built) + len(self._failed)}"
                try:
                    imgbuild([*args, "--output", output, "--progress", "plain"])
                except AssertionError as e:
                    self._failed[key] = e
                    raise
                result = check_result(output / "result.json")
                manifest = json.loads((output / "manifest.json").read_text())
                self._built[key] = Built(output, output / result["outputs"][0]["path"], result, manifest)
            return self._built[key]


@dataclass(frozen=True)
class Part:
    number: int
    start: int  # bytes
    size: int
    name: str
    type_guid: str


def partitions(image: Path) -> list[Part]:
    """The GPT of a raw image, read with sfdisk's JSON output."""
    table = json.loads(run.run(["sfdisk", "--json", image]).out)["partitiontable"]
    sector = table.get("sectorsize", 512)
    return [
        Part(i + 1, p["start"] * sector, p["size"] * sector, p.get("name", ""), p["type"].upper())
        for i, p in enumerate(table["partitions"])
    ]


def leaked_resources(under: Path) -> list[str]:
    """Loop devices backed by files under `under`, and mounts below it."""
    leaks = []
    for line in run.run(["losetup", "-a", "-O", "NAME,BACK-FILE", "-n", "--raw"]).out.splitlines():
        name, _, backing = line.partition(" ")
        if backing.startswith(str(under)):
            leaks.append(f"loop {name} -> {backing}")
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1]
        if target.startswith(str(under)):
            leaks.append(f"mount {target}")
    return leaks


@contextmanager
def raw_copy(image: Path, workdir: Path) -> Iterator[Path]:
    """A raw image to look into: the image itself if raw, else a sparse raw conversion."""
    info = json.loads(run.run(["qemu-img", "info", "--output=json", image]).out)
    if info["format"] == "raw":
        yield image
        return
    raw = workdir / f"{image.stem}.raw"
    run.run(["qemu-img", "convert", "-O", "raw", image, raw])
    try:
        yield raw
    finally:
        raw.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
