"""Measure `imgbuild import` of an ostree-native image against `tar -x` of the same layers.

Two images: a ~1 GB one (a commit of varied files: many small ones, medium ones, a few large ones; random
and compressible data, encapsulated in the chunked layout into an OCI directory; built once under
.cache/bench) and the example OS (53 layers, as ostree-ext chunks a real OS). Each is fetched once into an
imgbuild cache (`<cache>/oci`, where `imgbuild import` reads it), and its layers are also decompressed to
plain tars for the stricter baseline.

Each run: `imgbuild import` into a fresh repository, with every layer verified again (the cache's
"verified" marks are removed first: the import hashes each blob, inflates it, hashes the tar and checks
every object's checksum), timed, with the peak RSS of the import process itself and of the programs it
ran. Then the baselines, each into a fresh directory: `tar -x` of the layer blobs as the image carries
them (GNU tar runs gzip -d: decompressing and writing each byte once, the floor the issue names), and
`tar -x` of the already decompressed tars (stricter: no decompression at all), each alone and with the
sync libostree does for its own writes; then, for scale, the verification alone (hashing and gunzipping
the blobs, writing nothing). All read warm page cache. Prints the figures and the ratios of each run,
and with several runs the median and the spread of the ratios (the machine is shared: compare within a
run). Run as root:
`.venv/bin/python benchmarks/import_bench.py [--runs N] [--image example|large|both]`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _freshfs import fresh_filesystem  # noqa: E402  (this directory is sys.path[0])

from builder import run  # noqa: E402
from builder.arch import Arch  # noqa: E402
from builder.example import build_example  # noqa: E402
from builder.ostree.encapsulate import encapsulate  # noqa: E402
from builder.source.fetch import fetch_image  # noqa: E402
from builder.source.reference import parse_reference  # noqa: E402

BENCH = ROOT / ".cache" / "bench"
MiB = 1024 * 1024
WORDS = b"the quick brown fox jumps over lazy dog ostree image layer commit".split()

# Runs the import in a child process and reports that process's own peak RSS and its children's.
# Only the import command is registered, so that the figures do not depend on the other commands.
MEASURE = """
import argparse, json, resource, sys
from builder.commands import import_
parser = argparse.ArgumentParser()
import_.register(parser.add_subparsers())
args = parser.parse_args(sys.argv[2:])
rc = args.func(args)
own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": rc, "self_kib": own.ru_maxrss, "children_kib": kids.ru_maxrss,
           "cpu": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime}, open(sys.argv[1], "w"))
sys.exit(rc)
"""


def _compressible(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(WORDS, k=64)) + b"\n"
    return bytes(out[:size])


def _write(path: Path, rng: random.Random, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n) if rng.random() < 0.5 else _compressible(rng, n))
            left -= n


def build_tree(tree: Path) -> int:
    """~1 GB: 20,000 small files, 200 medium, 4 large; half random, half compressible."""
    rng = random.Random(42)
    total = 0
    for i in range(20000):
        size = rng.randrange(0, 16 * 1024)
        _write(tree / f"usr/share/small/{i % 100:02}/f{i}", rng, size)
        total += size
    for i in range(200):
        size = rng.randrange(256 * 1024, 2 * MiB)
        _write(tree / f"usr/lib/medium/m{i}.so", rng, size)
        total += size
    for i in range(4):
        size = 150 * MiB
        _write(tree / f"usr/lib/large/l{i}.img", rng, size)
        total += size
    (tree / "usr/etc").mkdir(parents=True, exist_ok=True)
    (tree / "usr/etc/os-release").write_text("ID=bench\nVERSION_ID=1\n")
    (tree / "usr/bin").mkdir(parents=True, exist_ok=True)
    (tree / "usr/bin/sh").symlink_to("bash")
    return total


def prepare() -> tuple[str, Path, list[Path]]:
    """(image reference, imgbuild cache, decompressed layer tars) of the ~1 GB image, built once."""
    BENCH.mkdir(parents=True, exist_ok=True)
    src, oci, cache, tars = BENCH / "src-repo", BENCH / "oci", BENCH / "imgbuild-cache", BENCH / "tars"
    done = BENCH / "prepared.json"
    ref = f"oci:{oci}:bench"
    if done.exists():
        return ref, cache, [Path(p) for p in json.loads(done.read_text())["tars"]]
    for path in (src, oci, cache, tars):
        shutil.rmtree(path, ignore_errors=True)
    tree = BENCH / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    t0 = time.monotonic()
    size = build_tree(tree)
    run.run(["ostree", "init", f"--repo={src}", "--mode=bare"])
    run.run(["ostree", "commit", f"--repo={src}", "--branch=bench", f"--tree=dir={tree}"])
    shutil.rmtree(tree)
    print(f"built a {size / MiB:.0f} MiB commit in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    t0 = time.monotonic()
    result = encapsulate(src, "bench", f"oci:{oci}:bench", max_layers=16)
    print(f"encapsulated {len(result.layers)} layers in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    paths = _fetch_and_unpack(ref, cache, tars)
    done.write_text(json.dumps({"tars": [str(p) for p in paths]}))
    return ref, cache, paths


def prepare_example(arch: Arch) -> tuple[str, Path, list[Path]]:
    """The same for the example OS (built or taken from its cache): many small layers, as rpm-ostree and
    ostree-ext chunk a real OS."""
    example = build_example(arch)
    where = BENCH / f"example-{arch.value}-{example.commit[:12]}"
    cache, tars, done = where / "imgbuild-cache", where / "tars", where / "prepared.json"
    if not done.exists():
        shutil.rmtree(where, ignore_errors=True)
        paths = _fetch_and_unpack(example.reference, cache, tars)
        done.write_text(json.dumps({"tars": [str(p) for p in paths]}))
    return example.reference, cache, [Path(p) for p in json.loads(done.read_text())["tars"]]


def _fetch_and_unpack(ref: str, cache: Path, tars: Path) -> list[Path]:
    """Fetch `ref` into `cache` and decompress each layer into `tars` (the baseline's input)."""
    image = fetch_image(parse_reference(ref), cache=blob_root(cache))
    tars.mkdir(parents=True)
    paths = []
    for layer in image.layers:
        out = tars / f"{layer.index:02}.tar"
        with gzip.open(image.blob_path(layer.digest)) as fin, open(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, 4 * MiB)
        paths.append(out)
    return paths


def blob_root(cache: Path) -> Path:
    """Where `imgbuild import` with IMGBUILD_CACHE=`cache` keeps blobs and their verification marks."""
    return cache / "oci"


def _settle() -> None:
    """Nobody else's writeback is paid for by a step's own sync (and each step writes into the fresh
    filesystem of _freshfs.py, where no earlier deletion costs it anything)."""
    os.sync()


def measure_import(ref: str, cache: Path, repo: Path) -> dict[str, float]:
    shutil.rmtree(repo, ignore_errors=True)
    marks = blob_root(cache) / "imgbuild" / "verified"
    if not marks.is_dir():  # a cache layout this script does not know: it would time no verification
        raise SystemExit(f"no verification marks at {marks}: the cache layout changed")
    for marker in marks.glob("*"):
        marker.unlink()  # verify every layer again, as a first import does
    report = BENCH / "import-rusage.json"
    _settle()
    t0 = time.monotonic()
    done = run.run(
        [sys.executable, "-c", MEASURE, str(report), "import", ref, "--repo", str(repo)],
        cwd=ROOT,
        env={"IMGBUILD_CACHE": str(cache)},
    )
    wall = time.monotonic() - t0
    usage = json.loads(report.read_text())
    phases = [line for line in done.stderr.decode().splitlines() if line.startswith("phases: ")]
    print(f"  import {phases[-1] if phases else '(no phases reported)'}")
    return {
        "wall": wall,
        "cpu": usage["cpu"],
        "self_mib": usage["self_kib"] / 1024,
        "children_mib": usage["children_kib"] / 1024,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_tar(tars: list[Path], dest: Path) -> tuple[float, float, float]:
    """(tar -x alone, tar -x then sync, CPU seconds of tar and the decompressor it runs) of each of `tars`
    (layer blobs, which GNU tar decompresses by their magic, or plain tars): libostree syncs what it wrote,
    tar does not."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    _settle()
    cpu0 = _children_cpu()
    t0 = time.monotonic()
    for tar in tars:
        run.run(["tar", "--numeric-owner", "-xpf", str(tar), "-C", str(dest)])
    wall = time.monotonic() - t0
    cpu = _children_cpu() - cpu0
    os.sync()
    return wall, time.monotonic() - t0, cpu


def layer_blobs(ref: str, cache: Path) -> list[Path]:
    """The image's layer blobs in the cache it was fetched into."""
    image = fetch_image(parse_reference(ref), cache=blob_root(cache))
    return [image.blob_path(layer.digest) for layer in image.layers]


def measure_verify(blobs: list[Path]) -> float:
    """The floor of any verified import: hash each blob, decompress it and hash the tar (in Python, as
    imgbuild's open_layer does), writing nothing."""
    t0 = time.monotonic()
    for blob in blobs:
        stored, tar = hashlib.sha256(), hashlib.sha256()
        with open(blob, "rb") as raw:
            for chunk in iter(lambda: raw.read(MiB), b""):
                stored.update(chunk)
        with gzip.open(blob) as inflated:
            for chunk in iter(lambda: inflated.read(MiB), b""):
                tar.update(chunk)
    return time.monotonic() - t0


def bench(name: str, ref: str, cache: Path, tars: list[Path], runs: int) -> None:
    layer_bytes = sum(t.stat().st_size for t in tars)
    blobs = layer_blobs(ref, cache)
    with fresh_filesystem(4 * layer_bytes + (2 << 30), BENCH) as work:
        _bench_runs(name, ref, cache, tars, blobs, work, runs)


def _bench_runs(
    name: str, ref: str, cache: Path, tars: list[Path], blobs: list[Path], work: Path, runs: int
) -> None:
    layer_bytes = sum(t.stat().st_size for t in tars)
    blob_bytes = sum(b.stat().st_size for b in blobs)
    ratios: list[float] = []
    strict_ratios: list[float] = []
    cpu_ratios: list[float] = []
    peaks: list[float] = []
    print(f"{name} image: {ref} (writes into a fresh ext4 at {work})")
    for i in range(runs):
        imp = measure_import(ref, cache, work / f"repo-{i}")
        tar, tar_sync, tar_cpu = measure_tar(blobs, work / f"tarz-{i}")
        plain, plain_sync, plain_cpu = measure_tar(tars, work / f"tar-{i}")
        verify = measure_verify(blobs)
        print(
            f"run {i + 1}: {len(tars)} layers, {blob_bytes / MiB:.0f} MiB of blobs, "
            f"{layer_bytes / MiB:.0f} MiB of tar"
        )
        print(
            f"  imgbuild import       : {imp['wall']:7.1f} s  "
            f"({layer_bytes / MiB / imp['wall']:.0f} MiB/s of tar)"
        )
        print(f"  tar -x of the blobs   : {tar:7.1f} s  (+ sync {tar_sync:.1f} s)  gzip -d and write")
        print(f"  tar -x of plain tars  : {plain:7.1f} s  (+ sync {plain_sync:.1f} s)  write only")
        print(f"  verify only           : {verify:7.1f} s  (hash blobs, gunzip, hash tars; nothing written)")
        ratio, strict = imp["wall"] / tar, imp["wall"] / plain
        ratios.append(ratio)
        strict_ratios.append(strict)
        peaks.append(max(imp["self_mib"], imp["children_mib"]))
        print(
            f"  ratio import / tar -x of the layers: {ratio:.2f}  "
            f"(against tar -x + sync: {imp['wall'] / tar_sync:.2f})"
        )
        print(
            f"  ratio import / tar -x of plain tars: {strict:.2f}  "
            f"(against tar -x + sync: {imp['wall'] / plain_sync:.2f})"
        )
        print(f"  ratio import / verify only: {imp['wall'] / verify:.2f}")
        # On a shared machine the wall ratio also measures how the scheduler shares the cores; the
        # CPU seconds (user + system, every thread) are the work itself.
        print(
            f"  CPU seconds: import {imp['cpu']:.1f}, tar -x of the layers {tar_cpu:.1f}, of plain tars "
            f"{plain_cpu:.1f}; ratio to the layers {imp['cpu'] / tar_cpu:.2f}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        cpu_ratios.append(imp["cpu"] / tar_cpu)
        print(
            f"  peak RSS import process: {imp['self_mib']:.0f} MiB; its child programs: "
            f"{imp['children_mib']:.0f} MiB",
            flush=True,
        )
        for done in ("repo", "tarz", "tar"):  # on a journaled ext4 a deletion costs the next run nothing
            shutil.rmtree(work / f"{done}-{i}")
        os.sync()
    if len(ratios) > 1:
        print(
            f"{name}: median ratio import / tar -x of the layers over {len(ratios)} runs: "
            f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); of plain tars "
            f"{statistics.median(strict_ratios):.2f} "
            f"(min {min(strict_ratios):.2f}, max {max(strict_ratios):.2f}); "
            f"CPU import / tar -x of the layers median {statistics.median(cpu_ratios):.2f}; "
            f"peak RSS max {max(peaks):.0f} MiB",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--image", choices=["example", "large", "both"], default="both")
    parser.add_argument("--arch", type=Arch.parse, default=Arch.X86_64, help="of the example")
    args = parser.parse_args()
    if args.image in ("large", "both"):
        bench("~1 GB", *prepare(), args.runs)
    if args.image in ("example", "both"):
        bench("example", *prepare_example(args.arch), args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
