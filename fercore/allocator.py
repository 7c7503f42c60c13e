"""Keep the memory torch frees for the next training step, instead of giving it back to the system each step.

glibc's malloc serves every block over 32 MB with a mapping of its own and unmaps it on free. hw3's 48x48
activations are 75 MB a batch, so every training step faulted those pages in again, 4 KB at a time, each one
zero-filled by the kernel: 270,000 page faults a step, and most of the gap between fercore's fp32 step and the
homework's Keras one (bench_train.py --keras: 0.75x Keras before, 1.11x after). Telling malloc not to map blocks
of their own and not to trim its heap makes freed blocks stay in the heap, and the next step reuses them (no page
faults from the fifth step on). Measured on a 2-core AMD EPYC (Zen 4), batch 128: hw3 trains 1.44x faster in fp32
and 1.47x in bf16, fernet_fullres 1.32x and 1.12x (benchmarks/bench_train.py, --system-malloc for the old way).
The price: the process holds its peak memory until it ends (hw3: 1.15 GB, against 0.42 GB when unmapping), which
a training process needs again at every step anyway. Only training and its benchmark call this, never the app.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # mallopt's parameters, from glibc's malloc.h
M_MMAP_MAX = -4
KEEP_UP_TO = 2**31 - 1  # bytes free at the heap's top before malloc gives any back (mallopt takes an int)


def keep_freed_memory() -> bool:
    """From now on, let freed memory stay in this process for reuse. True where that took effect (Linux with
    glibc); False elsewhere, where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO))
