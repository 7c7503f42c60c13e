"""Torch threads for the app's own work, on a 2-core laptop.

A training job holds one core: the app then uses the other one only, so a saliency click still answers in about a
second while the class trains. Single-image work (a saliency map, one face's layer outputs) always runs on one
thread: it is too small to split, and two threads that must meet at every layer lose far more than they gain as
soon as anything else (the browser, another session) wants a core.
"""

from __future__ import annotations

from ui import settings


def training_anywhere() -> bool:
    from fercore.jobs import any_running

    return any_running(settings.runs_root()) or any_running(settings.checkpoints_root())


def use_app_threads(batch: bool = True) -> int:
    """Set torch's thread count for the work that follows and return it: call before heavy work.

    batch: work on many images at once (evaluation, gradient ascent, a scan of the split), which two threads speed
    up when no job trains; False for single-image work.
    """
    import torch

    threads = settings.APP_THREADS if batch and not training_anywhere() else settings.APP_THREADS_DURING_TRAINING
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
