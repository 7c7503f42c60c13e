"""Run folders as the Train page sees them: listing, the arguments of a new run, progress in words."""

from __future__ import annotations

import time
from pathlib import Path

from fercore.runs import started_runs
from ui import settings, sources


def run_folders() -> list[Path]:
    """Every run under the runs root, newest first, including one that started but has no checkpoint yet."""
    return started_runs(settings.runs_root())


def resume_data(recorded: str | None, choice) -> tuple[str | None, str | None]:
    """(--data for resuming a run, a note for the user). `recorded` is the data path in the run's config, where it
    was trained; when that is not on this computer (a shipped checkpoint), the sidebar's data is used: it must hold
    the same images, which the trainer checks by their fingerprint."""
    if recorded is None or Path(recorded).exists():
        return None, None
    if choice is None:
        return None, f"This run was trained on `{recorded}`, which is not on this computer: choose your copy of " \
                     "that data in the sidebar to resume it."
    path = choice.path or str(sources.default_data_path())
    return path, f"This run was trained on `{recorded}`, which is not on this computer: resuming reads " \
                 f"{choice.label} instead (it must hold the same images; the trainer checks)."


def default_run_name(model: str) -> str:
    return f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_args(*, model: str, epochs: int, lr: float, batch_size: int, normalize: str, augment: str,
               balance: str, schedule: str, seed: int, data_args: list[str]) -> list[str]:
    """`python -m fercore train` options (fercore.jobs adds --out, --threads and --quiet)."""
    return [*data_args, "--model", model, "--epochs", str(epochs), "--lr", repr(float(lr)),
            "--batch-size", str(batch_size), "--normalize", normalize, "--augment", augment or "none",
            "--balance", balance, "--schedule", schedule, "--seed", str(seed)]


def progress_fraction(progress: dict) -> float:
    """How much of the whole run is done, from progress.json (0 before the first batch)."""
    try:
        done = (progress["epoch"] - 1) * progress["batches"] + progress["batch"]
        return max(0.0, min(1.0, done / (progress["epochs"] * progress["batches"])))
    except (KeyError, TypeError, ZeroDivisionError):
        return 0.0


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(progress: dict) -> str:
    if not progress:
        return "starting: loading data and building the model…"
    try:
        text = (f"epoch {progress['epoch']}/{progress['epochs']}, batch {progress['batch']}/{progress['batches']}"
                f" · train loss {progress['train_loss']:.3f} · train acc {progress['train_acc']:.1%}")
    except (KeyError, TypeError, ValueError):
        return "running"
    return f"{text} · about {duration(progress.get('eta_s'))} left"


def failure_line(log_tail: str) -> str | None:
    """The error line of the run's last job if it ended badly (fercore's CLI prints 'error: ...'), else None.

    fercore.jobs writes '$ <command>' into train.log at every start, so only the lines after the last one count.
    """
    lines = log_tail.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    for line in reversed(lines[starts[-1] + 1:] if starts else lines):
        if line.startswith("error:") or "Error" in line.split(":")[0]:
            return line
    return None
