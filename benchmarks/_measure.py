"""Run a command and print its peak resident memory (KiB, including its children) as the last line."""

from __future__ import annotations

import os
import resource
import sys

from builder import run


def main() -> int:
    env = {k: v for k, v in os.environ.items() if k.startswith("IMGBUILD_") or k == "PYTHONPATH"}
    sys.stdout.flush()
    # The command's stdout (e.g. --progress json events) passes through, before the peak line.
    result = run.run(sys.argv[1:], capture=False, stdout=sys.stdout.buffer, check=False, env=env)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(peak)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
