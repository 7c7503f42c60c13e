"""Cached loaders: each heavy result is computed once per server and shared by every session (a class of ten
opens the same checkpoint and data). Keys include the file's mtime and size, so a retrained best.pt is reloaded."""

from __future__ import annotations

import streamlit as st

from ui import sources
from ui.sidebar import Selection


# ------------------------------------------------------------------------------------------------ data

@st.cache_resource(show_spinner="Reading the data…", max_entries=6,
                   hash_funcs={sources.DataChoice: sources.DataChoice.file_identity})
def dataset(choice: sources.DataChoice):
    """The whole FerDataset the sidebar chose (DataError if it cannot be read)."""
    from fercore.data import load_dataset

    return load_dataset(choice.path)


@st.cache_resource(show_spinner=False, max_entries=12, hash_funcs={
    Selection: Selection.data_identity, sources.DataChoice: sources.DataChoice.file_identity})
def split_dataset(selection: Selection):
    """The rows of the chosen split (ValueError naming the splits present when it is empty)."""
    from fercore.labels import SPLIT_NAMES

    data = dataset(selection.data)
    if selection.split == "all":
        return data
    subset = data.select_split(selection.split)
    if len(subset) == 0:
        present = [SPLIT_NAMES[code] for code in sorted(set(data.split.tolist()))]
        raise ValueError(f"{data.source} has no {selection.split} rows: pick one of {', '.join(present)} or 'all' "
                         "in the sidebar")
    return subset


# ---------------------------------------------------------------------------------------------- models

@st.cache_resource(show_spinner="Loading the checkpoint…", max_entries=6)
def _model(path: str, stamp: tuple, epoch: int | None):
    from fercore.checkpoints import load_model
    from fercore.snapshots import model_at_epoch

    if epoch is not None:  # a snapshot never changes once written: the checkpoint's stamp keys it well enough
        return model_at_epoch(path, epoch)

    # A run training in the background replaces best.pt now and then. load_model reads the weights and then hashes
    # the file for its cache key, so a replacement in between would pair old weights with the new file's key (and
    # fercore's disk cache would keep their results under it): load again until the file held still throughout.
    checkpoint = sources.checkpoint_file(path)
    for _ in range(5):
        before = sources.stamp(checkpoint)
        loaded = load_model(path)
        if sources.stamp(checkpoint) == before:
            break
    return loaded


def model(path: str, epoch: int | None = None):
    """The LoadedModel of a .pt file or run folder, or of its run's snapshot after `epoch` (CheckpointError if it
    cannot be loaded)."""
    return _model(path, sources.stamp(sources.checkpoint_file(path)), epoch)
