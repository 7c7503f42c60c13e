"""fercore's files on disk, without importing torch (so a UI can list runs, and fercore.jobs start one, before
torch loads): the run-folder layout, the cache folder, and the one way fercore replaces a file.

A run folder holds LAST (every epoch), BEST (best validation accuracy), HISTORY_FILE, PROGRESS_FILE and
CONFIG_FILE, written by fercore.training, SNAPSHOTS_DIR (fercore.snapshots), TEACHER_ANSWERS_FILE where the run has
teachers (fercore.distillation); a background job adds LOCK_FILE,
JOB_FILE and LOG_FILE (fercore.jobs).
Every file fercore writes goes through `atomic_write`, so a reader never sees half a file and a write that fails
(a full disk, a refused permission, a SIGKILL) leaves the previous file as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Union

BEST, LAST = "best.pt", "last.pt"
HISTORY_FILE, PROGRESS_FILE, CONFIG_FILE = "history.json", "progress.json", "config.json"
LOCK_FILE, JOB_FILE, LOG_FILE = "job.lock", "job.json", "train.log"
SNAPSHOTS_DIR = "snapshots"  # epoch_0003.pt, ...: the weights at a few epochs, to replay training (fercore.snapshots)
TEACHER_ANSWERS_FILE = "teacher_probabilities.npy"  # (training images, classes) float32
RUN_FILES = (LAST, BEST, HISTORY_FILE, CONFIG_FILE, TEACHER_ANSWERS_FILE)  # what a copy of a run takes along (not
# its log or lock)
# What a run has from its first moment: a job file when started in the background, a config when training began.
# So a run shows up (to follow or to stop) before its first checkpoint exists.
STARTED_RUN_FILES = (LAST, BEST, CONFIG_FILE, JOB_FILE)

Content = Union[bytes, str, Callable[[BinaryIO], None]]


def cache_dir() -> Path:
    """Where fercore keeps what it can recompute (parsed data, evaluations, uploads): $FERCORE_CACHE_DIR, else
    ~/.cache/fercore."""
    return Path(os.environ.get("FERCORE_CACHE_DIR") or Path.home() / ".cache" / "fercore")


def atomic_write(path, content: Content, *, durable: bool = False) -> Path:
    """Replace `path` with `content` (bytes, text as UTF-8, or a function that writes into the open binary file,
    such as `lambda f: torch.save(state, f)`) all at once: it goes to a temporary file in the same folder, renamed
    over `path` only when complete. Any failure removes the temporary file, leaves the old `path` intact and
    re-raises. `durable` also forces the bytes to the disk before the rename, so a power cut cannot leave an
    empty file either (worth it for checkpoints, not for a progress file rewritten every second)."""
    path = Path(path)
    # Unique per call, not per process: the app writes from several threads at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path, value) -> Path:
    """A small JSON file (history, config, progress, job), written atomically so the app never reads half of it."""
    return atomic_write(path, json.dumps(value, indent=1))


def read_json(path, default):
    """A run's small JSON file (history, config, progress, job), or `default` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def run_checkpoint(folder) -> Path | None:
    """The checkpoint a run folder stands for: its best.pt, else last.pt (before the first best), else None."""
    folder = Path(folder)
    for name in (BEST, LAST):
        if (folder / name).is_file():
            return folder / name
    return None


def can_resume(folder) -> bool:
    """Whether a run folder has a last.pt to continue from (a new run there would overwrite it)."""
    return (Path(folder) / LAST).is_file()


def is_run_folder(path) -> bool:
    """A folder with a checkpoint to analyse (a run that finished at least one epoch, or a shipped one)."""
    return Path(path).is_dir() and run_checkpoint(path) is not None


def is_started_run(path) -> bool:
    """A folder where a run was started: it may still have no checkpoint (its first epoch is training)."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in STARTED_RUN_FILES)


def list_runs(*roots) -> list[Path]:
    """Every run folder directly under the given roots, sorted."""
    return sorted(child for root in map(Path, roots) if root.is_dir()
                  for child in root.iterdir() if is_run_folder(child))


def started_runs(root) -> list[Path]:
    """Every started run directly under `root` (with or without a checkpoint yet), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((child for child in root.iterdir() if is_started_run(child)),
                  key=lambda p: p.stat().st_mtime, reverse=True)


def run_history(folder) -> list:
    """The run's epoch records (history.json), [] before its first epoch ends."""
    return read_json(Path(folder) / HISTORY_FILE, [])


def best_record(history: list) -> dict | None:
    """The epoch record best.pt holds: the first with the highest validation accuracy (training replaces best.pt
    only when an epoch does strictly better); None without validation records."""
    scored = [r for r in history if isinstance(r, dict) and r.get("val_acc") is not None]
    return max(scored, key=lambda r: r["val_acc"]) if scored else None


def run_config(folder) -> dict:
    """The run's TrainConfig as a dict (config.json), {} before training began."""
    return read_json(Path(folder) / CONFIG_FILE, {})


def snapshot_path(folder, epoch: int) -> Path:
    """Where a run folder keeps its snapshot of the weights after `epoch`."""
    return Path(folder) / SNAPSHOTS_DIR / f"epoch_{int(epoch):04d}.pt"


def run_folder(checkpoint) -> Path:
    """The run folder of a checkpoint: itself for a folder, a .pt file's own folder."""
    checkpoint = Path(checkpoint)
    return checkpoint if checkpoint.is_dir() else checkpoint.parent


def snapshot_epochs(checkpoint) -> list[int]:
    """The epochs a checkpoint's run folder has snapshots of, in order ([] for none); a file's number is its epoch."""
    found = run_folder(checkpoint) / SNAPSHOTS_DIR
    names = sorted(found.glob("epoch_*.pt")) if found.is_dir() else []
    return [int(name.stem.split("_")[1]) for name in names if name.stem.split("_")[1].isdigit()]


def copy_run(source, target) -> Path:
    """Copy a run folder's checkpoints, history, config and snapshots into a new folder `target`, e.g. to continue
    training a shipped checkpoint without changing the shipped files. Refuses a `target` that already holds a run."""
    source, target = Path(source), Path(target)
    if not can_resume(source):
        raise FileNotFoundError(f"{source} has no {LAST} to continue from")
    if is_run_folder(target):
        raise FileExistsError(f"{target} already holds a run: choose another name")
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    if (source / SNAPSHOTS_DIR).is_dir():
        shutil.copytree(source / SNAPSHOTS_DIR, target / SNAPSHOTS_DIR)
    return target
