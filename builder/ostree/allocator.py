"""Keep the import's buffers in the heap: glibc's defaults return them to the kernel and fault them in again.

The import moves every layer through 1 MiB buffers that one thread fills (inflating) and others read and
free (parsing, writing). With glibc's defaults a buffer that size is either its own mmap (unmapped when
freed: the other core's TLB is shot down) or is carved from a heap whose freed top is trimmed at once, so
each new buffer's pages fault in and are zeroed by the kernel again. perf on the example OS's import: 22% of
its CPU copying into just-faulted pages and 5% zeroing them (4.1 CPU seconds in all, its blobs already
verified; 2.7 with the settings below). A higher mmap threshold and trim threshold keep the few dozen MiB in
flight mapped and reused; the peak RSS stays far below the 200 MiB budget (~80 MiB,
benchmarks/import_bench.py prints it).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # allocations below this come from the heap (the most glibc accepts)
TRIM_THRESHOLD = 256 << 20  # free heap top kept before it is returned to the kernel


def keep_buffers_mapped() -> None:
    """Raise glibc's mmap and trim thresholds for this process (a no-op where libc has no mallopt)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl has no mallopt): its allocator, its behaviour
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if mallopt(param, value) != 1:
            log.debug("mallopt(%d, %d) refused", param, value)
