"""Benchmark: several outputs from one build against one build per output, measured in the same run.

`imgbuild build --type qcow2 --type vmdk --type gce REF` deploys once and converts the one disk three times;
the baseline is `imgbuild qcow2 REF`, `imgbuild vmdk REF` and `imgbuild gce REF` run one after the other. The
image is imported once before timing (both sides find it in the cache). Prints the seconds of each side, the
ratio separate/multi, and the number of ostree.deploy stages each side ran.
Run as root: `.venv/bin/python benchmarks/multi_bench.py [--arch x86_64]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import run  # noqa: E402
from builder.arch import Arch  # noqa: E402
from builder.example import build_example  # noqa: E402

TYPES = ("qcow2", "vmdk", "gce")


def _imgbuild(args: list[str], cache: Path) -> float:
    env = {"IMGBUILD_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    run.run([sys.executable, "-m", "builder", *args], env=env)
    return time.monotonic() - t0


def _deploys(output: Path) -> int:
    manifest = json.loads((output / "manifest.json").read_text())
    return sum(s["type"] == "ostree.deploy" for p in manifest["pipelines"] for s in p["stages"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", type=Arch.parse, default=Arch.host())
    args = parser.parse_args()
    reference = build_example(args.arch).reference
    with tempfile.TemporaryDirectory(prefix="imgbuild-multi-bench-", dir=ROOT / ".cache") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        # Import once (plan imports the image into the cache) so that neither side pays for it.
        _imgbuild(["plan", "qcow2", reference, "-o", str(work / "warm.json")], cache)
        common = ["--progress", "plain"]
        type_args = [a for name in TYPES for a in ("--type", name)]
        multi = _imgbuild(["build", *type_args, reference, "--output", str(work / "multi"), *common], cache)
        separate = 0.0
        separate_deploys = 0
        for name in TYPES:
            out = work / f"separate-{name}"
            separate += _imgbuild([name, reference, "--output", str(out), *common], cache)
            separate_deploys += _deploys(out)
        multi_deploys = _deploys(work / "multi")
        print(f"multi-output build ({' + '.join(TYPES)}): {multi:.1f} s, {multi_deploys} deployment(s)")
        print(f"three separate builds:                {separate:.1f} s, {separate_deploys} deployment(s)")
        print(f"ratio separate/multi: {separate / multi:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
