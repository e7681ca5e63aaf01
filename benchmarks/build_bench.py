"""Benchmark: building a qcow2 from the example OS, against a floor measured in the same run.

Prints the cold build time (empty cache), the warm rebuild time (import cached), the peak memory of the
build process, and the floor: extracting the image's layers into a fresh filesystem image (tar -x, then
mkfs.ext4 -d) plus `qemu-img convert` of a raw image of the same used size. Ratios are against that floor.
Run as root: `.venv/bin/python benchmarks/build_bench.py [--arch x86_64]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import run  # noqa: E402
from builder.arch import Arch  # noqa: E402
from builder.example import build_example  # noqa: E402


def _children_maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _timed_build(reference: str, output: Path, cache: Path, arch: Arch) -> tuple[float, float]:
    env = {"IMGBUILD_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    argv = [
        sys.executable,
        str(ROOT / "benchmarks/_measure.py"),
        sys.executable,
        "-m",
        "builder",
        "qcow2",
        reference,
        "--arch",
        arch.value,
        "--output",
        str(output),
        "--progress",
        "plain",
    ]
    t0 = time.monotonic()
    result = run.run(argv, env=env)
    seconds = time.monotonic() - t0
    peak_kib = int(result.out.strip().splitlines()[-1])
    return seconds, peak_kib / 1024


def _floor(reference_path: Path, work: Path) -> tuple[float, int]:
    """tar -x of every layer into a fresh directory, mkfs.ext4 -d of it, qemu-img convert of that image."""
    layout = work / "layout"
    layout.mkdir(parents=True)
    run.run(["tar", "-xf", reference_path, "-C", layout])
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / manifest_digest).read_text())
    t0 = time.monotonic()
    tree = work / "tree"
    tree.mkdir()
    for layer in manifest["layers"]:
        blob = layout / "blobs/sha256" / layer["digest"].split(":")[1]
        run.run(["tar", "-xf", blob, "-C", tree, "--numeric-owner"])
    used = int(run.run(["du", "-sb", tree]).out.split()[0])
    size = max(used * 2, 256 << 20)
    fs = work / "fs.raw"
    run.run(["truncate", "-s", str(size), fs])
    run.run(["mkfs.ext4", "-q", "-d", tree, fs])
    run.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", fs, work / "fs.qcow2"])
    return time.monotonic() - t0, used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", type=Arch.parse, default=Arch.X86_64)
    args = parser.parse_args()
    example = build_example(args.arch)
    with tempfile.TemporaryDirectory(prefix="imgbuild-bench-", dir=ROOT / ".cache") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        cold, cold_mem = _timed_build(example.reference, work / "cold", cache, args.arch)
        warm, warm_mem = _timed_build(example.reference, work / "warm", cache, args.arch)
        floor, used = _floor(example.path, work / "floor")
    print(f"example image: {example.reference} ({used / 2**20:.0f} MiB extracted)")
    print(f"floor (tar -x layers + mkfs.ext4 -d + qemu-img convert): {floor:.1f} s")
    print(f"cold build: {cold:.1f} s  ratio {cold / floor:.2f}  peak RSS {cold_mem:.0f} MiB")
    print(f"warm build: {warm:.1f} s  ratio {warm / floor:.2f}  peak RSS {warm_mem:.0f} MiB")
    print(f"warm/cold: {warm / cold:.2f}")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
