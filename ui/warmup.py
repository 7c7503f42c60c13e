"""Import what the first heavy click would otherwise wait for, in the background, once per server process.

torch imports torch._dynamo (seconds on a busy 2-core laptop) the first time an optimizer steps, which gradient
ascent on the Filters page does; doing it while the class looks at the first page keeps that first render short.
"""

from __future__ import annotations

import threading

import streamlit as st


def _import_quietly() -> None:
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: BLE001 -- only a head start; the real call imports it anyway
        pass


@st.cache_resource(show_spinner=False)
def start() -> threading.Thread:
    thread = threading.Thread(target=_import_quietly, name="fercore-warmup", daemon=True)
    thread.start()
    return thread
