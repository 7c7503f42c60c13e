"""Where the app finds checkpoints and runs (its cache is fercore's: fercore.runs.cache_dir). Environment variables
override the defaults, so tests and a teacher's setup can point the app elsewhere without editing code."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def checkpoints_root() -> Path:
    """Shipped checkpoints: .pt files and run folders (env FERCORE_CHECKPOINTS)."""
    return Path(os.environ.get("FERCORE_CHECKPOINTS") or REPO / "checkpoints")


def runs_root() -> Path:
    """Where the Train page creates run folders (env FERCORE_RUNS)."""
    return Path(os.environ.get("FERCORE_RUNS") or REPO / "runs")


# The command the app shows when there is no checkpoint yet.
TRAIN_COMMAND = "python -m fercore train --model fernet --epochs 10 --out runs/first"

# Torch threads for the app's own work: the machine has 2 cores, a training job gets 1.
APP_THREADS, APP_THREADS_DURING_TRAINING, JOB_THREADS = 2, 1, 1
