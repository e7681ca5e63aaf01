"""Run a command and print its peak resident memory as the last line: "PEAK TREE" in KiB, where PEAK is the
largest peak of any one process (the command or a program it ran) and TREE the largest sum, sampled every
100 ms, of the resident memory of all the processes of the command's tree alive at once (the build and the
mkfs, qemu-img or ostree it runs at the same time)."""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path

from builder import run

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text(encoding="ascii").split()]
    except OSError:
        pass  # gone meanwhile
    return found


def _tree_rss_kib(root: int) -> int:
    """The resident memory of `root`'s descendants (not `root` itself: this small process), walked down
    from `root` (only the tree's own /proc entries are read)."""
    total = 0
    pending = _children(root)
    while pending:
        pid = pending.pop()
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except (OSError, ValueError, IndexError):
            continue
        pending += _children(pid)
    return total


def main() -> int:
    env = {k: v for k, v in os.environ.items() if k.startswith("IMGBUILD_") or k == "PYTHONPATH"}
    sys.stdout.flush()
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.wait(0.1):
            peak_tree = max(peak_tree, _tree_rss_kib(os.getpid()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # The command's stdout (e.g. --progress json events) passes through, before the peak line.
    try:
        result = run.run(sys.argv[1:], capture=False, stdout=sys.stdout.buffer, check=False, env=env)
    finally:
        done.set()
        sampler.join()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(peak, max(peak_tree, peak))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
