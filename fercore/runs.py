"""The run-folder layout, without importing torch (so a UI can list runs before torch loads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

BEST, LAST = "best.pt", "last.pt"
RUN_FILES = (LAST, BEST, "history.json", "config.json")  # what a copy of a run takes along (not its log or lock)


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


def is_run_folder(path) -> bool:
    return Path(path).is_dir() and run_checkpoint(path) is not None


def list_runs(*roots) -> list[Path]:
    """Every run folder directly under the given roots, sorted."""
    return sorted(child for root in map(Path, roots) if root.is_dir()
                  for child in root.iterdir() if is_run_folder(child))


def copy_run(source, target) -> Path:
    """Copy a run folder's checkpoints, history and config into a new folder `target`, e.g. to continue training a
    shipped checkpoint without changing the shipped files. Refuses a `target` that already holds a run."""
    source, target = Path(source), Path(target)
    if not (source / LAST).is_file():
        raise FileNotFoundError(f"{source} has no {LAST} to continue from")
    if is_run_folder(target):
        raise FileExistsError(f"{target} already holds a run: choose another name")
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    return target
