"""Torch threads for the app's own work. On a 2-core laptop a training job holds one core: the app then uses the
other one only, so a saliency click still answers in about a second while the class trains."""

from __future__ import annotations

from ui import settings


def training_anywhere() -> bool:
    from fercore.jobs import any_running

    return any_running(settings.runs_root()) or any_running(settings.checkpoints_root())


def use_app_threads() -> int:
    """Set torch's thread count for the work that follows (call before heavy work) and return it."""
    import torch

    threads = settings.APP_THREADS_DURING_TRAINING if training_anywhere() else settings.APP_THREADS
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
