"""Benchmark: building the aarch64 example on this x86_64 host against the x86_64 example, in one run.

No stage runs a target-architecture program, so the cross build should cost about what the native one does.
Prints each build time (cold: empty cache; warm: import cached, the median of --repeat runs) and the
aarch64/x86_64 ratios.
Run as root: `.venv/bin/python benchmarks/arch_bench.py`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import run  # noqa: E402
from builder.arch import Arch  # noqa: E402
from builder.example import build_example  # noqa: E402


def _build(reference: str, output: Path, cache: Path) -> float:
    env = {"IMGBUILD_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    run.run(
        [sys.executable, "-m", "builder", "qcow2", reference, "--output", str(output), "--progress", "plain"],
        env=env,
    )
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="warm builds per architecture (median)")
    args = parser.parse_args()
    examples = {arch: build_example(arch) for arch in (Arch.X86_64, Arch.AARCH64)}
    times: dict[tuple[Arch, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="imgbuild-arch-bench-", dir=ROOT / ".cache") as tmp:
        work = Path(tmp)
        for arch, example in examples.items():
            cache = work / f"cache-{arch}"
            times[arch, "cold"] = _build(example.reference, work / f"{arch}-cold", cache)
            warm = [_build(example.reference, work / f"{arch}-warm{i}", cache) for i in range(args.repeat)]
            times[arch, "warm"] = statistics.median(warm)
    for kind in ("cold", "warm"):
        x86, arm = times[Arch.X86_64, kind], times[Arch.AARCH64, kind]
        print(f"{kind}: x86_64 {x86:.1f} s, aarch64 {arm:.1f} s, ratio aarch64/x86_64 {arm / x86:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
