"""The pages, in menu order. Page files are addressed by path so pages can switch to each other.

They live in app_pages/, not pages/: Streamlit treats a pages/ folder beside the main script as a legacy multipage
app and may then run a page file without dashboard.py (no sidebar), for a first visit to /inspect or in AppTest.
"""

import streamlit as st

CONFUSION = "app_pages/confusion.py"
INSPECT = "app_pages/inspect.py"
FILTERS = "app_pages/filters.py"
MODEL = "app_pages/model.py"
COMPARE = "app_pages/compare.py"
LABELS = "app_pages/labels.py"
TRY_IT = "app_pages/try_it.py"
TRAIN = "app_pages/train.py"


def pages() -> list:
    return [
        st.Page(CONFUSION, title="Confusion", icon=":material/grid_on:", default=True),
        st.Page(INSPECT, title="Inspect", icon=":material/center_focus_strong:"),
        st.Page(FILTERS, title="Filters", icon=":material/filter_vintage:"),
        st.Page(MODEL, title="Model", icon=":material/account_tree:"),
        st.Page(COMPARE, title="Compare", icon=":material/compare_arrows:"),
        st.Page(LABELS, title="Labels", icon=":material/label:"),
        st.Page(TRY_IT, title="Try it", icon=":material/photo_camera:"),
        st.Page(TRAIN, title="Train", icon=":material/model_training:"),
    ]
