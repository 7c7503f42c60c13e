"""fercore dashboard: `streamlit run dashboard.py`.

Train a model, click a confusion cell to see its faces, inspect one face's saliency, render a layer's filters.
The sidebar (checkpoint, data, split) is shared by every page; selections live in st.session_state (ui/keys.py).
"""

import os

# OpenMP threads that wait for work sleep instead of spinning, so the app's two torch threads do not burn the core a
# training job or the browser needs. Read once, when torch loads: the sidebar below does not import it.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import streamlit as st  # noqa: E402

from ui import nav, sidebar, warmup  # noqa: E402

st.set_page_config(page_title="fercore", page_icon=":material/sentiment_satisfied:", layout="wide")
page = st.navigation(nav.pages())
sidebar.render()
page.run()
warmup.start()  # after the first page is drawn, once per server
