"""fercore dashboard: `streamlit run dashboard.py`.

Train a model, click a confusion cell to see its faces, inspect one face's saliency, render a layer's filters.
The sidebar (checkpoint, data, split) is shared by every page; selections live in st.session_state (ui/keys.py).
"""

import os

# OpenMP threads that wait for work sleep instead of spinning, so the app's two torch threads do not burn the core a
# training job or the browser needs. Read once, when torch loads: the sidebar below does not import it.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

# plotly looks numpy, pandas and PIL.Image up in sys.modules without importing them; on a server that has just
# started, another session's script may still be importing one of them there, half built ("partially initialized
# module 'pandas' has no attribute 'Series'" in place of the matrix). Importing them before any page runs makes
# every script run wait on Python's import lock until they are complete. pandas costs under a second, once per server.
import numpy  # noqa: E402, F401
import pandas  # noqa: E402, F401
import PIL.Image  # noqa: E402, F401
import streamlit as st  # noqa: E402

from ui import compute, nav, sidebar  # noqa: E402

st.set_page_config(page_title="fercore", page_icon=":material/sentiment_satisfied:", layout="wide")
page = st.navigation(nav.pages())
sidebar.render()
page.run()
compute.start_warmup()  # after the first page is drawn, once per server
