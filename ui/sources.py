"""What the sidebar can offer, found without importing torch (the sidebar must paint at once)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fercore.runs import atomic_write, cache_dir, is_run_folder, run_checkpoint
from ui import settings


def checkpoint_options() -> list[str]:
    """Shipped .pt files and run folders under the checkpoints root, then every run folder under the runs root."""
    options: list[str] = []
    for root in (settings.checkpoints_root(), settings.runs_root()):
        if not root.is_dir():
            continue
        children = sorted(root.iterdir())
        options += [str(p) for p in children if p.suffix == ".pt" and p.is_file() and not p.name.startswith(".")]
        options += [str(p) for p in children if is_run_folder(p)]
    return options


def is_shipped(path: str) -> bool:
    """Whether a checkpoint choice is one of the shipped ones (under the checkpoints root), not a run."""
    return Path(path).parent == settings.checkpoints_root()


def checkpoint_label(path: str) -> str:
    return f"{Path(path).name} ({'shipped' if is_shipped(path) else 'run'})"


def checkpoint_file(path: str) -> Path:
    """The file a checkpoint choice means: a .pt file itself, a run folder its best.pt (else last.pt)."""
    return (run_checkpoint(path) if Path(path).is_dir() else None) or Path(path)


def stamp(path: Path | str | None) -> tuple:
    """(mtime, size) of a file, so caches notice a checkpoint or data file replaced on disk."""
    try:
        info = os.stat(path)
        return info.st_mtime_ns, info.st_size
    except (OSError, TypeError):
        return (0, 0)


@dataclass(frozen=True)
class DataChoice:
    """The data the sidebar selected: path None means fercore's shipped default file.

    Its file's stamp is read when the choice is made (each rerun makes it anew), so the choice itself is a cache
    key that changes when the file does: cached functions take it as a plain argument."""

    path: str | None
    label: str
    stamp: tuple | None = None  # None: read now

    def __post_init__(self):
        if self.stamp is None:
            object.__setattr__(self, "stamp", stamp(self.path or default_data_path()))

    def file_identity(self) -> tuple:
        """What the data read from it depends on: the path and its stamp, not the label."""
        return self.path, self.stamp

    @property
    def key(self) -> str:
        """Identity for caches and logs: the path and when it last changed."""
        return f"{self.path or 'default'}@{self.stamp}"


def default_data_path() -> Path:
    """fercore.data.DEFAULT_DATA_PATH, without importing fercore.data (and torch) just to paint the sidebar."""
    return settings.REPO / "data" / "fer2013_test.npz"


def save_upload(data: bytes) -> Path:
    """Keep an uploaded CSV under the app cache, named by its content (never by the browser's file name), so a
    training job can read it later and the same upload is written once."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = cache_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}.csv"
    if not target.exists():
        atomic_write(target, data)
    return target
