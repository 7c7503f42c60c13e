"""The sidebar every page shares: which checkpoint, which data, which split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from fercore import runs
from ui import keys, sources

SPLITS = ("PrivateTest", "PublicTest", "Training", "all")
DATA_MODES = {"default": "Shipped demo data", "path": "A file or folder on this computer", "upload": "Upload a CSV"}
_SELECTION = "_selection"


@dataclass(frozen=True)
class Selection:
    """Which checkpoint, data and split: what every analysis result depends on. The checkpoint file's stamp is read
    when the selection is made, as the data's is (sources.DataChoice), so a selection is a cache key that changes
    when either file does: ui.analysis caches its functions on it directly."""

    checkpoint: str | None  # path of a .pt file or run folder; None when there is none yet
    data: sources.DataChoice | None  # None while an upload or path is missing
    split: str
    checkpoint_stamp: tuple | None = None  # None: read now
    epoch: int | None = None  # replay: the run's snapshot after this epoch in place of the checkpoint's weights

    def __post_init__(self):
        if self.checkpoint_stamp is None and self.checkpoint is not None:
            object.__setattr__(self, "checkpoint_stamp", sources.stamp(sources.checkpoint_file(self.checkpoint)))

    def model_name(self) -> str:
        """The checkpoint as the server's log names it: its file or folder name, and the epoch replayed."""
        name = Path(self.checkpoint).name if self.checkpoint else "no checkpoint"
        return name + (f" at epoch {self.epoch}" if self.epoch is not None else "")

    def model_identity(self) -> tuple:
        """What a result of the model alone (its layers, its filters) depends on: not the data or the split."""
        return self.checkpoint, self.checkpoint_stamp, self.epoch

    def data_identity(self) -> tuple:
        """What the split's rows depend on: not the checkpoint."""
        return self.data, self.split


def _forget_cell() -> None:
    st.session_state[keys.CELL] = None
    st.session_state.pop(keys.GALLERY_PAGE, None)


def _forget_image_and_cell() -> None:
    _forget_cell()
    st.session_state[keys.IMAGE] = None


def render() -> Selection:
    """Draw the sidebar and remember what it selects for the page (see `selection`)."""
    for key in (keys.CELL, keys.IMAGE):
        st.session_state.setdefault(key, None)
    with st.sidebar:
        checkpoint = _checkpoint_picker()
        epoch = _epoch_picker(checkpoint)
        data = _data_picker()
        split = st.selectbox("Split", SPLITS, key=keys.SPLIT, on_change=_forget_image_and_cell,
                             help="PrivateTest is the held-out test split; PublicTest is used for validation.")
    chosen = Selection(checkpoint=checkpoint, data=data, split=split, epoch=epoch)
    st.session_state[_SELECTION] = chosen
    return chosen


def selection() -> Selection:
    """What the sidebar selected in this run (drawing it if the page runs without dashboard.py)."""
    if _SELECTION not in st.session_state:
        return render()
    return st.session_state[_SELECTION]


def _checkpoint_picker() -> str | None:
    options = sources.checkpoint_options()
    if not options:
        st.caption("**Checkpoint**: none yet. Train one on the Train page.")
        return None
    if st.session_state.get(keys.CHECKPOINT) not in options:
        st.session_state[keys.CHECKPOINT] = options[0]
    checkpoint = st.selectbox("Checkpoint", options, key=keys.CHECKPOINT, format_func=sources.checkpoint_label,
                              on_change=_forget_cell, help="Shipped checkpoints and every run folder under runs/.")
    progress = _training_progress(checkpoint)
    if progress:
        st.caption(progress)
    return checkpoint


def _training_progress(checkpoint: str) -> str:
    """How far the checkpoint's run got ("hw3: 80 of 250 epochs trained"), and which epoch is shown where that is
    its best.pt rather than the last ("; shown: epoch 32, the best on validation"), so a class knows what it is
    looking at; "" for a checkpoint file without a run's history."""
    folder = runs.run_folder(checkpoint)
    history = runs.run_history(folder)
    if not history:
        return ""
    planned = runs.run_config(folder).get("epochs")
    done = history[-1].get("epoch", len(history))
    text = f"{Path(checkpoint).name}: {done}" + (f" of {planned}" if planned else "") + " epochs trained"
    shown = Path(checkpoint) if Path(checkpoint).is_file() else runs.run_checkpoint(folder)
    best = (runs.best_record(history) or {}).get("epoch")
    if shown is not None and shown.name == runs.BEST and best not in (None, done):
        text += f"; shown: epoch {best}, the best on validation"  # best.pt, not the last epoch
    return text


def _epoch_picker(checkpoint: str | None) -> int | None:
    """Replay training: where the checkpoint's run kept snapshots, a slider over their epochs, ending at the
    checkpoint itself ("as saved", the default)."""
    epochs = runs.snapshot_epochs(checkpoint) if checkpoint else []
    if not epochs:
        return None
    options = [*epochs, None]
    if st.session_state.get(keys.EPOCH) not in options:
        st.session_state[keys.EPOCH] = None
    epoch = st.select_slider("Epoch", options, key=keys.EPOCH,
                             format_func=lambda e: "as saved" if e is None else str(e),
                             help="Replay training: the model as it was after this epoch (the epochs its run kept "
                                  "a snapshot of). Every page's matrix, saliency and filters follow.")
    if epoch is not None:
        record = next((r for r in runs.run_history(runs.run_folder(checkpoint)) if r.get("epoch") == epoch), None)
        st.caption(f"Replaying epoch {epoch}" + (f": validation accuracy {record['val_acc']:.1%}" if record else ""))
    return epoch


def _data_picker() -> sources.DataChoice | None:
    mode = st.radio("Data", list(DATA_MODES), key=keys.DATA_MODE, format_func=DATA_MODES.get,
                    on_change=_forget_image_and_cell)
    if mode == "default":
        return sources.DataChoice(path=None, label="shipped demo data (PublicTest + PrivateTest)")
    if mode == "path":
        path = st.text_input("Path", key=keys.DATA_PATH, on_change=_forget_image_and_cell,
                             placeholder="/home/me/fer2013.csv",
                             help="fer2013.csv, the course's train.csv or test.csv, an image folder or a .npz")
        path = (path or "").strip()
        return sources.DataChoice(path=path, label=path) if path else None
    upload = st.file_uploader("CSV file", type=["csv"], key=keys.DATA_UPLOAD, on_change=_forget_image_and_cell,
                              help="fer2013.csv format (emotion,pixels,Usage) or the course's train.csv / test.csv")
    if upload is None:
        return None
    saved = st.session_state.setdefault(keys.UPLOADED, {})
    if upload.file_id not in saved:
        saved[upload.file_id] = str(sources.save_upload(upload.getvalue()))
    return sources.DataChoice(path=saved[upload.file_id], label=f"upload {upload.name}")
