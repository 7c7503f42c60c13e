"""The Train page's side of run folders: listing them, the new-run form as a TrainConfig, progress in words.
The files themselves are fercore.runs'."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from fercore.config import RECIPES, TrainConfig, augment_text, default, parse_augment
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


# The new-run form's widget for each TrainConfig field it shows (the rest keep TrainConfig's defaults).
FORM_KEYS = {"model": "w_train_model", "epochs": "w_train_epochs", "batch_size": "w_train_batch", "lr": "w_train_lr",
             "schedule": "w_train_schedule", "weight_decay": "w_train_wd", "label_smoothing": "w_train_smoothing",
             "normalize": "w_train_normalize", "balance": "w_train_balance", "augment": "w_train_augment",
             "seed": "w_train_seed", "precision": "w_train_precision"}
PROCESSES_KEY = "w_train_processes"  # how many local GPUs a new run trains on (asked only with 2 or more)
THREADS_KEY = "w_train_threads"  # the CPU threads a new run trains on: the app's choice, not a recipe's
THREADS_HELP = ("CPU threads of the training process. 1 leaves a core to the app, so its pages answer quickly while "
                "the run trains; 2 trains faster (the recipes' times are for 2) and slows the pages meanwhile.")


def thread_choices() -> list[int]:
    """1 up to the cores this process may run on; the default, settings.JOB_THREADS, leaves the app a core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return list(range(1, max(cores, settings.JOB_THREADS) + 1))


def resume_threads(config: dict) -> int:
    """The threads a run resumes on unless the user picks others: those it trained on, since the same threads
    continue it exactly as if it had never stopped (within this computer's cores)."""
    return min(int(config.get("threads") or settings.JOB_THREADS), thread_choices()[-1])


def form_values(config: TrainConfig) -> dict:
    """Widget key -> value that shows `config` in the new-run form (the augmentation as its text)."""
    return {key: augment_text(config.augment) if name == "augment" else getattr(config, name)
            for name, key in FORM_KEYS.items()}


def form_config(values: dict, data: str | None) -> TrainConfig:
    """The TrainConfig of the new-run form's widget values (by key), on `data` (None: the shipped file), with the
    form's CPU threads."""
    chosen = {name: values[key] for name, key in FORM_KEYS.items()}
    chosen["augment"] = parse_augment(str(chosen["augment"]).strip())
    for name in ("epochs", "batch_size", "seed"):  # number inputs hand back what they were given
        chosen[name] = int(chosen[name])
    return TrainConfig(**chosen, data=data, threads=int(values.get(THREADS_KEY, settings.JOB_THREADS)))


@functools.cache
def auto_precision():
    """(the device a run started here trains on, the precision `auto` picks there): the machine's facts, read once
    per server, not at each of the Train page's three uses on every rerun."""
    from fercore.precision import choose_precision
    from fercore.training import pick_device

    device = pick_device(default("device"))
    return device, choose_precision("auto", device)


def auto_precision_note() -> str:
    """What precision `auto` picks for a run started here, and why."""
    device, choice = auto_precision()
    return f"auto means {choice.name} on this computer's {device.type.upper()}: {choice.reason}."


def recipes() -> dict:
    """fercore's recipes as this computer runs them: where it trains in bf16, with their bf16 budgets."""
    precision = auto_precision()[1].name
    return {name: recipe.in_precision(precision) for name, recipe in RECIPES.items()}


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


def process_choices() -> list[int]:
    """How many processes a new run may train with: 1 up to this computer's CUDA devices, or [] with fewer than 2
    (then the form does not ask). With N > 1 the run starts under torchrun, one process per GPU."""
    from fercore.distributed import cuda_device_count

    gpus = cuda_device_count()
    return list(range(1, gpus + 1)) if gpus > 1 else []
