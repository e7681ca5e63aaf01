"""Benchmark: TCG boots one at a time against two at once, with -smp 1 and -smp 2, measured in the same run.

The test suite boots independent images two at a time (tests/bootpool.py); this says whether that gives real
throughput on a 2-core machine and which -smp the guests should get. Each boot is the CLI the tests run,
`imgbuild boot IMAGE --append imgbuild.selftest=1 --smp N` (to the self-test marker); a pair starts two of
them at once. Per -smp: the seconds of one boot alone (the baseline), the wall time of a pair, and the
speed-up of the pair against two boots one after the other (2 x alone / pair), and the CPU seconds a boot
costs (qemu included; unlike wall time, barely moved by other load on the machine). Then smp 1 against 2.
Run as root: `.venv/bin/python benchmarks/boot_bench.py [--image DISK] [--arch x86_64] [--rounds 1]`
(without --image it builds a qcow2 of the example first, not timed).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import run  # noqa: E402
from builder.arch import Arch  # noqa: E402
from builder.example import SELFTEST_KARG, build_example  # noqa: E402


def _imgbuild(*args: str | Path) -> None:
    run.run([sys.executable, "-m", "builder", *map(str, args)], env={"PYTHONPATH": str(ROOT)})


def _boot(image: Path, arch: Arch, firmware: str, smp: int) -> float:
    t0 = time.monotonic()
    _imgbuild("boot", image, "--arch", arch.value, "--firmware", firmware, "--smp", str(smp),
              "--append", SELFTEST_KARG, "--timeout", "900")  # fmt: skip
    return time.monotonic() - t0


def _cpu() -> float:
    """CPU seconds of the finished children (the boots' qemu included): the work, whatever the load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pair(image: Path, arch: Arch, firmware: str, smp: int) -> tuple[float, list[float]]:
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        each = list(pool.map(lambda _: _boot(image, arch, firmware, smp), range(2)))
    return time.monotonic() - t0, each


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", type=Path, help="the disk to boot (default: a qcow2 of the example)")
    parser.add_argument("--arch", type=Arch.parse, default=Arch.host())
    parser.add_argument("--firmware", choices=["bios", "uefi"], default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--smp", type=int, nargs="+", default=[2, 1])
    args = parser.parse_args()
    firmware = args.firmware or ("bios" if args.arch is Arch.X86_64 else "uefi")
    with tempfile.TemporaryDirectory(prefix="imgbuild-boot-bench-", dir=ROOT / ".cache") as tmp:
        image = args.image
        if image is None:
            out = Path(tmp) / "out"
            _imgbuild("qcow2", build_example(args.arch).reference, "--output", out, "--progress", "plain")
            image = out / "disk.qcow2"
        pair_wall: dict[int, list[float]] = {n: [] for n in args.smp}
        alone: dict[int, list[float]] = {n: [] for n in args.smp}
        cpu: dict[int, list[float]] = {n: [] for n in args.smp}  # CPU seconds per boot
        for _ in range(args.rounds):
            for smp in args.smp:
                before = _cpu()
                alone[smp].append(_boot(image, args.arch, firmware, smp))
                cpu[smp].append(_cpu() - before)
                print(
                    f"smp {smp}: one boot alone {alone[smp][-1]:.1f} s, {cpu[smp][-1]:.1f} CPU s", flush=True
                )
            for smp in args.smp:
                before = _cpu()
                wall, each = _pair(image, args.arch, firmware, smp)
                pair_wall[smp].append(wall)
                cpu[smp].append((_cpu() - before) / 2)
                print(f"smp {smp}: two at once {wall:.1f} s wall (each {each[0]:.1f} s, {each[1]:.1f} s), "
                      f"{cpu[smp][-1]:.1f} CPU s per boot", flush=True)  # fmt: skip
        print(f"{args.arch} {firmware}, {args.rounds} round(s), medians:")
        for smp in args.smp:
            one, two = statistics.median(alone[smp]), statistics.median(pair_wall[smp])
            print(f"smp {smp}: alone {one:.1f} s, pair {two:.1f} s, speed-up of a pair 2*alone/pair = "
                  f"{2 * one / two:.2f}; CPU per boot {statistics.median(cpu[smp]):.1f} s")  # fmt: skip
        if len(args.smp) == 2:
            a, b = args.smp
            ratio_alone = statistics.median(alone[a]) / statistics.median(alone[b])
            ratio_pair = statistics.median(pair_wall[a]) / statistics.median(pair_wall[b])
            ratio_cpu = statistics.median(cpu[a]) / statistics.median(cpu[b])
            print(
                f"smp {a}/smp {b}: alone {ratio_alone:.2f}, pair {ratio_pair:.2f}, "
                f"CPU per boot {ratio_cpu:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
