"""fercore dashboard: `streamlit run dashboard.py`.

Train a model, click a confusion cell to see its faces, inspect one face's saliency, render a layer's filters.
The sidebar (checkpoint, data, split) is shared by every page; selections live in st.session_state (ui/keys.py).
"""

import streamlit as st

from ui import nav, sidebar, warmup

st.set_page_config(page_title="fercore", page_icon=":material/sentiment_satisfied:", layout="wide")
page = st.navigation(nav.pages())
sidebar.render()
page.run()
warmup.start()  # after the first page is drawn, once per server
