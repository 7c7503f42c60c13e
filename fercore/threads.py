"""Torch's CPU thread count, for a process or for one call: what evaluation and the app set.

On a 2-core laptop the count matters more than anywhere: a training job and the app each want a core, and two
OpenMP threads that must meet at every layer lose time as soon as anything else wants a core.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def set_threads(threads: int) -> int:
    """Make torch use `threads` CPU threads from now on (a no-op when it already does) and return the count."""
    threads = int(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@contextmanager
def threads_for_call(threads: int | None):
    """`threads` CPU threads inside the block, the previous count restored after; None changes nothing."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        set_threads(previous)


def preload_dynamo() -> None:
    """Import torch._dynamo now (seconds on a busy laptop), which torch otherwise imports on first use of some
    of its machinery: a server calls this in the background so no click waits for it. Failing is harmless."""
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: BLE001 -- only a head start; the real use imports it anyway
        pass
