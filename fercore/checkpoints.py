"""Checkpoints: atomic saves, safe loads, and a model ready for analysis.

A checkpoint is a plain dict of tensors and JSON-like values written with torch.save and read back with
`weights_only=True`, so loading a file never runs code from it. Saves go to a temporary file in the same
folder and are renamed over the target, so a crash at any instant leaves the previous checkpoint readable.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fercore.analysis_mode import analysis_mode
from fercore.models import build_model
from fercore.runs import BEST, LAST, atomic_write, run_checkpoint
from fercore.transforms import Normalizer

FORMAT = "fercore-checkpoint/1"
INPUT_RANGE_FACES = 256  # enough faces for per-image standardization's extremes, few enough to take no time
PREDICT_BATCH = 256  # faces per forward pass in LoadedModel.predict: bounded memory, still large for oneDNN


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read, with the path and the reason."""


def save_checkpoint(state: dict, path) -> None:
    """Write `state` to `path` atomically: the old file stays intact until the new one is complete on disk."""
    try:
        atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f), durable=True)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None


def resolve_checkpoint(path) -> Path:
    """A run folder means its best.pt (or last.pt before the first best); a file means itself."""
    path = Path(path)
    if path.is_dir():
        found = run_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path} holds no {BEST} or {LAST}: is it a fercore run folder?")
        return found
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def read_checkpoint(path) -> dict:
    """Read a checkpoint dict without unpickling arbitrary objects; every failure is a CheckpointError."""
    return _read_bytes(*_file_bytes(path))[0]


def _file_bytes(path) -> tuple[Path, bytes]:
    path = resolve_checkpoint(path)
    try:
        return path, path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None


def _read_bytes(path: Path, data: bytes) -> tuple[dict, str]:
    """The state in `data` and its content key. One read serves both, so a file replaced meanwhile (a trainer
    saving best.pt) can never pair old weights with the new file's key."""
    if not data:
        raise CheckpointError(f"{path} is an empty file (0 bytes), not a checkpoint")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any global it does not know: a pickle that would build objects or run code.
        reason = str(e).splitlines()[0][:200]
        raise CheckpointError(f"{path} is not a safe fercore checkpoint (refused to unpickle: {reason})") from None
    except Exception as e:  # noqa: BLE001 -- torch.load fails in many ways on foreign bytes (IndexError on text)
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a torch file: "
                              f"{reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a fercore checkpoint (no '{FORMAT}' format tag)")
    return state, hashlib.sha256(data).hexdigest()[:16]


def architecture_signature(model: nn.Module) -> str:
    """A hash of the model's printed structure (layers, widths, strides): weights of the same shapes can still
    belong to another definition of a model, so checkpoints record it and loading compares. A ReLU in place is the
    same layer as one that is not (training runs them in place: fercore.models.relus_in_place)."""
    return hashlib.sha256(str(model).replace("ReLU(inplace=True)", "ReLU()").encode()).hexdigest()[:16]


@dataclass
class LoadedModel:
    """A trained model in eval mode on the CPU, with what it needs to read raw uint8 faces."""

    model: nn.Module
    model_name: str
    normalizer: Normalizer
    config: dict
    history: list = field(default_factory=list)
    path: str = ""
    key: str = ""

    def preprocess(self, pixels) -> torch.Tensor:
        """uint8 faces (N, 48, 48) -> the float input (N, 1, 48, 48) the model was trained on."""
        return self.normalizer(torch.as_tensor(pixels))

    def input_range(self, faces) -> tuple[float, float]:
        """The model's input value range: the preprocessed extremes of the first INPUT_RANGE_FACES of some real
        uint8 faces (N, 48, 48) and of an all-black and an all-white face. Valid for every normalization
        (per-image standardization's range depends on the faces); gradient ascent keeps its pixels inside it."""
        faces = torch.as_tensor(faces[:INPUT_RANGE_FACES], dtype=torch.uint8).reshape(-1, 48, 48)
        x = self.preprocess(torch.cat([faces, torch.zeros(1, 48, 48, dtype=torch.uint8),
                                       torch.full((1, 48, 48), 255, dtype=torch.uint8)]))
        return float(x.min()), float(x.max())

    def predict(self, pixels) -> np.ndarray:
        """Softmax probabilities, float32 (N, C), of uint8 faces (N, 48, 48) or of one face (48, 48) as (1, C).

        Under analysis_mode, so a model shared between threads is run in eval mode and left as it was."""
        faces = np.asarray(pixels, dtype=np.uint8).reshape(-1, 48, 48)
        with analysis_mode(self.model), torch.inference_mode():
            chunks = [torch.softmax(self.model(self.preprocess(faces[i:i + PREDICT_BATCH])), dim=1)
                      for i in range(0, len(faces), PREDICT_BATCH)]
        return torch.cat(chunks).float().numpy()

    @property
    def epoch(self) -> int:
        return len(self.history)


def model_from_state(state: dict, path="checkpoint") -> nn.Module:
    """Build the checkpoint's architecture and load its weights; a mismatch is a CheckpointError."""
    name = state.get("model_name")
    try:
        model = build_model(name)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    signature = state.get("architecture")
    if signature is not None and signature != architecture_signature(model):
        raise CheckpointError(f"{path}: was trained with another definition of {name!r} than this fercore has "
                              "(layers or strides differ), so its weights would compute something else")
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: weights do not fit architecture {name!r} "
                              f"({str(e).splitlines()[0][:200]})") from None
    return model


def load_model(path) -> LoadedModel:
    """Load a checkpoint file or run folder as a LoadedModel ready for evaluation and saliency."""
    path, data = _file_bytes(path)
    state, key = _read_bytes(path, data)
    model = model_from_state(state, path).eval()
    return LoadedModel(model=model, model_name=state["model_name"],
                       normalizer=Normalizer.from_dict(state["normalizer"]),
                       config=dict(state.get("config", {})), history=list(state.get("history", [])),
                       path=str(path), key=key)
