"""Training replayed: compact copies of a run's weights at chosen epochs, so a class can watch a model learn.

A run folder keeps, in its SNAPSHOTS_DIR, the weights after the epochs `is_snapshot_epoch` picks: 1, 2, 3, 5, 8, 13,
21, ... (dense early, when the model changes most) and the run's last, one file each (fercore.runs names them and
lists them without torch). They are fp16: half the size, and no visible change to a saliency map or a confusion
matrix. Each is written atomically before the epoch's last.pt, so a killed run keeps every snapshot it finished and
a resumed one goes on adding to them. `model_at_epoch` turns a snapshot back into a LoadedModel that every analysis
takes as it takes a checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from fercore.checkpoints import CheckpointError, LoadedModel, architecture_signature, load_model
from fercore.runs import atomic_write, run_folder, run_history, snapshot_path

FORMAT = "fercore-snapshot/1"


def is_snapshot_epoch(epoch: int, last: int) -> bool:
    """Whether training keeps a snapshot after `epoch` (1-based) of a run of `last` epochs: the Fibonacci epochs
    1, 2, 3, 5, 8, 13, ... and the last one."""
    a, b = 1, 2
    while a < epoch:
        a, b = b, a + b
    return a == epoch or epoch == last


def save_snapshot(run_dir, epoch: int, model: nn.Module) -> None:
    """Keep the model's weights after `epoch`: floats as fp16, integers (BatchNorm's batch count) as they are."""
    path = snapshot_path(run_dir, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {name: value.detach().cpu().half() if value.is_floating_point() else value.detach().cpu().clone()
               for name, value in model.state_dict().items()}
    state = {"format": FORMAT, "epoch": int(epoch), "architecture": architecture_signature(model),
             "model_state": weights}
    try:
        atomic_write(path, lambda f: torch.save(state, f), durable=True)
    except OSError as e:
        raise CheckpointError(f"cannot write snapshot {path}: {e.strerror or e}") from None


def _read_snapshot(folder: Path, epoch: int) -> dict:
    path = snapshot_path(folder, epoch)
    if not path.is_file():
        raise CheckpointError(f"{folder}: has no snapshot of epoch {epoch}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a truncated or foreign file fails in many ways
        raise CheckpointError(f"{path} is not a readable snapshot ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fercore snapshot (no '{FORMAT}' format tag)")
    return state


def model_at_epoch(checkpoint, epoch: int) -> LoadedModel:
    """The checkpoint's model with the weights it had after `epoch`, as a LoadedModel whose history ends there and
    whose key (for fercore's disk caches) is the snapshot's own."""
    loaded = load_model(checkpoint)
    folder = run_folder(checkpoint)
    state = _read_snapshot(folder, epoch)
    if state.get("architecture") != architecture_signature(loaded.model):
        raise CheckpointError(f"{snapshot_path(folder, epoch)}: is a snapshot of another architecture than "
                              f"{loaded.path}")
    weights, model = state["model_state"], loaded.model
    model.load_state_dict({name: value.to(model.state_dict()[name].dtype) for name, value in weights.items()})
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].numpy().tobytes())
    # The run's history: the checkpoint may be an earlier best.pt, whose own history ends before the snapshot.
    history = run_history(folder) or loaded.history
    return replace(loaded, model=model.eval(), history=history[:int(epoch)],
                   key=f"{digest.hexdigest()[:16]}-epoch{int(epoch)}")
