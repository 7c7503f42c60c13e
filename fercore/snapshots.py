"""Training replayed: compact copies of a run's weights at chosen epochs, so a class can watch a model learn.

A run folder's SNAPSHOTS_FILE holds the weights (in fp16: half the size, and no visible change to a saliency map or
a confusion matrix) after the epochs `is_snapshot_epoch` picks: 1, 2, 3, 5, 8, 13, 21, ... (dense early, when the
model changes most) and the run's last. It is rewritten atomically after each of them, so a killed run keeps every
snapshot it finished, and a resumed run goes on adding to it. `model_at_epoch` turns a snapshot back into a
LoadedModel that every analysis takes as it takes a checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from fercore.checkpoints import CheckpointError, LoadedModel, architecture_signature, load_model
from fercore.runs import SNAPSHOTS_FILE, atomic_write, run_history

FORMAT = "fercore-snapshots/1"


def is_snapshot_epoch(epoch: int, last: int) -> bool:
    """Whether training keeps a snapshot after `epoch` (1-based) of a run of `last` epochs: the Fibonacci epochs
    1, 2, 3, 5, 8, 13, ... and the last one."""
    a, b = 1, 2
    while a < epoch:
        a, b = b, a + b
    return a == epoch or epoch == last


def snapshots_path(checkpoint) -> Path:
    """Where the snapshots of a checkpoint's run are: in the run folder (a .pt file's own folder)."""
    checkpoint = Path(checkpoint)
    return (checkpoint if checkpoint.is_dir() else checkpoint.parent) / SNAPSHOTS_FILE


def _read(path: Path, mmap: bool = False) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 -- a truncated or foreign file fails in many ways
        raise CheckpointError(f"{path} is not a readable snapshots file ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fercore snapshots file (no '{FORMAT}' format tag)")
    return state


def save_snapshot(run_dir, epoch: int, model: nn.Module) -> None:
    """Add the model's weights after `epoch` to the run's snapshots (fp16 floats; integers such as BatchNorm's
    batch count as they are)."""
    path = Path(run_dir) / SNAPSHOTS_FILE
    state = _read(path) or {"format": FORMAT, "architecture": architecture_signature(model), "epochs": {}}
    state["epochs"][int(epoch)] = {name: value.detach().cpu().half() if value.is_floating_point()
                                   else value.detach().cpu().clone() for name, value in model.state_dict().items()}
    atomic_write(path, lambda f: torch.save(state, f), durable=True)


def snapshot_epochs(checkpoint) -> list[int]:
    """The epochs a checkpoint's run kept snapshots of, [] when it kept none. Memory-mapped: listing them reads
    no weights."""
    state = _read(snapshots_path(checkpoint), mmap=True)
    return sorted(int(epoch) for epoch in state["epochs"]) if state else []


def model_at_epoch(checkpoint, epoch: int) -> LoadedModel:
    """The checkpoint's model with the weights it had after `epoch`, as a LoadedModel whose history ends there and
    whose key (for fercore's disk caches) is the snapshot's own."""
    loaded = load_model(checkpoint)
    path = snapshots_path(checkpoint)
    state = _read(path)
    if state is None or int(epoch) not in state["epochs"]:
        raise CheckpointError(f"{path.parent}: has no snapshot of epoch {epoch}")
    if state.get("architecture") != architecture_signature(loaded.model):
        raise CheckpointError(f"{path}: its snapshots are of another architecture than {loaded.path}")
    weights = state["epochs"][int(epoch)]
    model = loaded.model
    model.load_state_dict({name: value.to(model.state_dict()[name].dtype) for name, value in weights.items()})
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].numpy().tobytes())
    # The run's history (the checkpoint may be an earlier best.pt, whose own history ends before the snapshot)
    history = run_history(path.parent) or loaded.history
    return replace(loaded, model=model.eval(), history=history[:int(epoch)],
                   key=f"{digest.hexdigest()[:16]}-epoch{int(epoch)}")
