"""The run-folder layout, without importing torch (so a UI can list runs before torch loads)."""

from __future__ import annotations

from pathlib import Path

BEST, LAST = "best.pt", "last.pt"


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
