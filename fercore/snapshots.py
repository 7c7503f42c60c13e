"""Training replayed: compact copies of a run's weights at chosen epochs, so a class can watch a model learn.

A run folder keeps, in its SNAPSHOTS_DIR, the weights after the epochs `is_snapshot_epoch` picks: 1, 2, 3, 5, 8, 13,
21, ... (dense early, when the model changes most) and the run's last, one file each (fercore.runs names them and
lists them without torch). Training writes them in fp16: half the size, and no visible change to a saliency map or
a confusion matrix. Each is written atomically before the epoch's last.pt, so a killed run keeps every snapshot it
finished and a resumed one goes on adding to them. `model_at_epoch` turns a snapshot back into a LoadedModel that
every analysis takes as it takes a checkpoint.

`reencode_snapshot` turns one into "int8" (a quarter of fp32): each large weight matrix and convolution kernel as
8-bit integers with one scale per output channel, the small tensors (biases, BatchNorm, a first layer) staying
fp16. That is how the shipped checkpoints carry their replay within the repository's size budget. On the shipped
checkpoints, int8 weights change 13 (fernet_wide) and 14 (hw3) of the 3,589 PrivateTest predictions, fp16 ones
0-2: about what evaluating in bf16 changes (tests/test_snapshots.py holds them to it).
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
ENCODINGS = ("fp16", "int8")
# int8 only pays on large tensors; a first layer's 9 weights per filter, kept in int8, changed 43 of fernet_fullres's
# 3,589 PrivateTest predictions by themselves (every layer in int8: 47; with this threshold: 15).
INT8_MIN_SIZE = 4096


def is_snapshot_epoch(epoch: int, last: int) -> bool:
    """Whether training keeps a snapshot after `epoch` (1-based) of a run of `last` epochs: the Fibonacci epochs
    1, 2, 3, 5, 8, 13, ... and the last one."""
    a, b = 1, 2
    while a < epoch:
        a, b = b, a + b
    return a == epoch or epoch == last


def encode_weights(state_dict: dict, encoding: str = "fp16") -> dict:
    """A state dict made compact: floats as fp16, or (int8) weight tensors of INT8_MIN_SIZE or more values as
    {"int8": values, "scale": one fp32 scale per output channel}; integers (BatchNorm's batch count) as they are."""
    if encoding not in ENCODINGS:
        raise ValueError(f"snapshot encoding {encoding!r}: choose one of {', '.join(ENCODINGS)}")
    return {name: _encode(value.detach().cpu(), encoding) for name, value in state_dict.items()}


def _encode(value: torch.Tensor, encoding: str):
    if not value.is_floating_point():
        return value.clone()
    if encoding == "fp16" or value.dim() < 2 or value.numel() < INT8_MIN_SIZE:
        return value.half()
    value = value.float()
    # Symmetric per output channel: each filter keeps its own range, so a quiet filter is not rounded to zero.
    scale = value.abs().amax(dim=tuple(range(1, value.dim())), keepdim=True).clamp_min(1e-12) / 127
    return {"int8": torch.round(value / scale).to(torch.int8), "scale": scale}


def decode_weights(stored: dict) -> dict[str, torch.Tensor]:
    """The tensors of `encode_weights`'s dict, floats as fp32."""
    return {name: value["int8"].float() * value["scale"] if isinstance(value, dict)
            else value.float() if value.is_floating_point() else value for name, value in stored.items()}


def load_encoded_weights(model: nn.Module, stored: dict) -> nn.Module:
    """Load `encode_weights`'s dict into `model`, each tensor in the dtype the model keeps it in."""
    own = model.state_dict()
    model.load_state_dict({name: value.to(own[name].dtype) for name, value in decode_weights(stored).items()})
    return model


def _stored_tensors(stored: dict):
    """(name, tensor) for every tensor an encoded dict holds, in a fixed order: what identifies a snapshot."""
    for name in sorted(stored):
        value = stored[name]
        parts = sorted(value.items()) if isinstance(value, dict) else [("", value)]
        for part, tensor in parts:
            yield f"{name}{part}", tensor


def save_snapshot(run_dir, epoch: int, model: nn.Module) -> None:
    """Keep the model's weights after `epoch`, in fp16."""
    state = {"format": FORMAT, "epoch": int(epoch), "architecture": architecture_signature(model),
             "model_state": encode_weights(model.state_dict())}
    _write_snapshot(snapshot_path(run_dir, epoch), state)


def reencode_snapshot(source: Path, target: Path, encoding: str) -> None:
    """Write the snapshot file `source` to `target` in `encoding` (from its stored weights: fp16 -> int8 rounds the
    fp16 values)."""
    state = _read_snapshot_file(source)
    _write_snapshot(target, {**state, "model_state": encode_weights(decode_weights(state["model_state"]), encoding)})


def _write_snapshot(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda f: torch.save(state, f), durable=True)
    except OSError as e:
        raise CheckpointError(f"cannot write snapshot {path}: {e.strerror or e}") from None


def _read_snapshot(folder: Path, epoch: int) -> dict:
    path = snapshot_path(folder, epoch)
    if not path.is_file():
        raise CheckpointError(f"{folder}: has no snapshot of epoch {epoch}")
    return _read_snapshot_file(path)


def _read_snapshot_file(path: Path) -> dict:
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
    model = load_encoded_weights(loaded.model, state["model_state"])
    digest = hashlib.sha256()
    for name, tensor in _stored_tensors(state["model_state"]):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    # The run's history: the checkpoint may be an earlier best.pt, whose own history ends before the snapshot.
    history = run_history(folder) or loaded.history
    return replace(loaded, model=model.eval(), history=history[:int(epoch)],
                   key=f"{digest.hexdigest()[:16]}-epoch{int(epoch)}")
