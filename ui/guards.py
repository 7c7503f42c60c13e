"""What a page needs before it can draw: a checkpoint and readable data. Each guard explains what is missing and
stops the page there, so the rest of the page code can assume it."""

from __future__ import annotations

import streamlit as st

from ui import loaders, nav, settings
from ui.errors import show_error
from ui.sidebar import Selection


def need_checkpoint(selection: Selection) -> None:
    if selection.checkpoint is not None:
        return
    st.info("There is no trained model yet. Train one on the **Train** page (a few minutes on a laptop), "
            f"or in a terminal:\n\n```\n{settings.TRAIN_COMMAND}\n```\n\nthen pick it in the sidebar.",
            icon=":material/info:")
    st.page_link(nav.TRAIN, label="Go to the Train page", icon=":material/model_training:")
    st.stop()


def need_data(selection: Selection, labels: bool = False):
    """The rows of the chosen split, or stop with the reason (a missing upload, a DataError, an empty split)."""
    if selection.data is None:
        st.info("Choose the data in the sidebar: give a path or upload a CSV.", icon=":material/info:")
        st.stop()
    try:
        data = loaders.split_dataset(selection)
    except Exception as error:  # noqa: BLE001 -- shown, and the page stops cleanly
        show_error(error, "read the data")
        st.stop()
    if labels and data.labels is None:
        st.warning(f"{data.source} has no labels (a course test.csv?): a confusion matrix needs labelled data. "
                   "Pick labelled data in the sidebar.", icon=":material/warning:")
        st.stop()
    return data


def need_model(selection: Selection):
    """The loaded checkpoint, or stop with its CheckpointError."""
    need_checkpoint(selection)
    try:
        return loaders.model(selection.checkpoint, selection.epoch)
    except Exception as error:  # noqa: BLE001
        show_error(error, "load the checkpoint")
        st.stop()
