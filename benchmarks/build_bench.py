"""Benchmark: building a qcow2 from the example OS and from a ~1 GB image, against a floor measured in the
same run.

For each image prints the cold build time (empty cache), the warm rebuild time (import cached), the peak
memory of the build process, where the time went (fetch, import and its phases, deploy, bootloader, disk
and convert: the build's own progress events), and the floor: extracting the image's layers into a fresh
filesystem image (tar -x, then mkfs.ext4 -d) plus `qemu-img convert` of a raw image of the same used size.
Ratios are against that floor. Every write of a run (the cache, both builds, the floor) goes into a fresh
ext4 filesystem (see _freshfs.py), so that no step pays for the deletions of another.

The ~1 GB image is the example's commit with import_bench's ~1 GB tree laid over it (one ostree commit of
both trees, encapsulated in the chunked layout), built once under .cache/bench.
Run as root: `.venv/bin/python benchmarks/build_bench.py [--arch x86_64] [--image example|large|both]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _freshfs import fresh_filesystem  # noqa: E402  (this directory is sys.path[0])
from import_bench import BENCH, prepare  # noqa: E402

from builder import run  # noqa: E402
from builder.arch import Arch  # noqa: E402
from builder.example import ExampleImage, build_example  # noqa: E402
from builder.ostree.encapsulate import encapsulate  # noqa: E402

FS_SIZE = 24 << 30  # sparse: the ~1 GB image's cache, two builds and the floor fit with room to spare


def _timed_build(reference: str, output: Path, cache: Path, arch: Arch) -> tuple[float, float, list[str]]:
    """(seconds, peak RSS MiB of the build's process tree, phases) of one `imgbuild qcow2` run."""
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
        "json",
    ]
    t0 = time.monotonic()
    result = run.run(argv, env=env)
    seconds = time.monotonic() - t0
    lines = result.out.strip().splitlines()
    peak_kib = int(lines[-1].split()[1])  # the whole tree at once (see _measure.py)
    phases = []
    for line in lines[:-1]:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "phase-end":
            phases.append(f"{event['phase']} {event['seconds']:.1f} s")
        elif event.get("event") == "stage-end":
            note = " (cached)" if event["cached"] else ""
            phases.append(f"[{event['stage']} {event['seconds']:.1f} s{note}]")
    return seconds, peak_kib / 1024, phases


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


def large_image(example: ExampleImage) -> Path:
    """The example's commit with the ~1 GB benchmark tree over it, as an OCI archive (built once)."""
    archive = BENCH / f"large-{example.arch.value}-{example.commit[:12]}.ociarchive"
    if archive.exists():
        return archive
    prepare()  # the ~1 GB commit, in BENCH/src-repo under the ref "bench"
    repo = BENCH / "large-repo"
    shutil.rmtree(repo, ignore_errors=True)
    run.run(["ostree", "init", f"--repo={repo}", "--mode=bare"])
    run.run(["ostree", "pull-local", f"--repo={repo}", str(example.repo), example.ref])
    run.run(["ostree", "pull-local", f"--repo={repo}", str(BENCH / "src-repo"), "bench"])
    run.run(
        [
            "ostree",
            "commit",
            f"--repo={repo}",
            "--branch=large",
            f"--tree=ref={example.ref}",
            "--tree=ref=bench",
            "--add-metadata-string=version=1",
            "--add-metadata=ostree.bootable=true",  # as the example's: encapsulate turns it into labels
        ]
    )
    partial = archive.with_suffix(".partial")
    encapsulate(repo, "large", f"oci-archive:{partial}:latest", max_layers=32, arch=example.arch)
    partial.rename(archive)
    shutil.rmtree(repo)
    return archive


def bench(name: str, reference: str, archive: Path, arch: Arch) -> None:
    # Every write (the cache, both builds, the floor) goes into one fresh filesystem: see _freshfs.py.
    with fresh_filesystem(FS_SIZE, ROOT / ".cache") as work:
        cache = work / "cache"
        cold, cold_mem, cold_phases = _timed_build(reference, work / "cold", cache, arch)
        warm, warm_mem, warm_phases = _timed_build(reference, work / "warm", cache, arch)
        floor, used = _floor(archive, work / "floor")
    load = os.getloadavg()[0]
    print(f"{name} image: {reference} ({used / 2**20:.0f} MiB extracted; load average {load:.1f})")
    print(f"  floor (tar -x layers + mkfs.ext4 -d + qemu-img convert): {floor:.1f} s")
    print(f"  cold build: {cold:.1f} s  ratio {cold / floor:.2f}  peak RSS {cold_mem:.0f} MiB")
    print(f"    phases: {', '.join(cold_phases)}")
    print(f"  warm build: {warm:.1f} s  ratio {warm / floor:.2f}  peak RSS {warm_mem:.0f} MiB")
    print(f"    phases: {', '.join(warm_phases)}")
    print(f"  warm/cold: {warm / cold:.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", type=Arch.parse, default=Arch.X86_64)
    parser.add_argument("--image", choices=["example", "large", "both"], default="both")
    args = parser.parse_args()
    example = build_example(args.arch)
    if args.image in ("example", "both"):
        bench("example", example.reference, example.path, args.arch)
    if args.image in ("large", "both"):
        archive = large_image(example)
        bench("~1 GB", f"oci-archive:{archive}:latest", archive, args.arch)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
