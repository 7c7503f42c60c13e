"""Labels: the faces FER2013's label and FER+'s ten annotators disagree on, and the model scored against each."""

import streamlit as st

from ui import analysis, guards, keys, sidebar
from ui.errors import shown_errors

st.title("Labels")
selection = sidebar.selection()
guards.need_checkpoint(selection)
data = guards.need_data(selection, labels=True)

from fercore import render  # noqa: E402 -- after the first paint
from fercore.ferplus import describe_votes  # noqa: E402
from fercore.labels import CLASS_NAMES  # noqa: E402

PAGE_SIZE, COLUMNS = 24, 8


def summary(audit) -> str:
    disputed, likely = len(audit.disputed), int(audit.likely_mislabeled.sum())
    counted = len(audit.rows) - audit.excluded
    return (f"{len(audit.rows):,} faces of {selection.split}; {audit.excluded:,} have no FER+ majority (a tie, or "
            f"most votes for contempt, unknown or not a face) and are left out. On the other {counted:,}, FER2013's "
            f"label differs from the FER+ majority on **{disputed:,}** ({disputed / max(counted, 1):.0%}); the model "
            f"sides with FER+ on **{likely:,}** of them: likely mislabels.")


def scores(selection, audit) -> None:
    both = st.toggle("Score against the FER+ majority too", key=keys.LABELS_FERPLUS, persist_state="session",
                     help="FER+ asked ten annotators per face; its majority is a less noisy label than FER2013's")
    figures = analysis.label_figures(selection, False)
    c1, c2 = st.columns(2)
    c1.metric("Accuracy against FER2013's labels", f"{audit.fer2013_accuracy:.1%}")
    if both:
        c2.metric("Accuracy against the FER+ majority", f"{audit.ferplus_accuracy:.1%}",
                  delta=f"{100 * (audit.ferplus_accuracy - audit.fer2013_accuracy):+.1f} points")
    left, right = st.columns(2)  # a row of their own, so the two grids line up under metrics of unequal height
    left.plotly_chart(figures["fer2013"], key="labels_fer2013", width="content")
    if both:
        right.plotly_chart(figures["ferplus"], key="labels_ferplus", width="content")
    st.caption("Both on the faces with a FER+ majority, so the two numbers count the same faces.")


def gallery(audit, pixels) -> None:
    """The disputed faces, most certain FER+ majority first; `pixels` are the split's faces."""
    only_likely = st.toggle("Only likely mislabels (the model sides with FER+)", key=keys.LABELS_MISLABELED,
                            persist_state="session")
    positions = audit.disputed[audit.likely_mislabeled] if only_likely else audit.disputed
    if len(positions) == 0:
        st.caption("No face here.")
        return
    st.caption(f"{len(positions):,} faces, the most certain FER+ majority first.")
    pages = (len(positions) + PAGE_SIZE - 1) // PAGE_SIZE
    if not 1 <= st.session_state.get(keys.LABELS_PAGE, 1) <= pages:
        st.session_state.pop(keys.LABELS_PAGE)
    page = st.pagination(pages, key=keys.LABELS_PAGE) if pages > 1 else 1
    shown = positions[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    for row in range(0, len(shown), COLUMNS):
        for column, k in zip(st.columns(COLUMNS), shown[row:row + COLUMNS]):
            predicted = int(audit.predictions[k])
            sides = " ✓ FER+" if predicted == audit.majority[k] else ""
            column.image(render.upscale(pixels[audit.rows[k]], 2), width="stretch")
            column.caption(f"FER2013 **{CLASS_NAMES[audit.labels[k]]}** · FER+ **{CLASS_NAMES[audit.majority[k]]}** "
                           f"({audit.share[k]:.0%})  \n{describe_votes(audit.votes[k])}  \n"
                           f"model {CLASS_NAMES[predicted]}{sides}")


guards.need_model(selection)  # a checkpoint that does not load stops the page here, with its reason

with shown_errors("compare the labels"):
    with st.spinner(f"Evaluating on {len(data)} images (once per checkpoint and data, shared by every session)…"):
        audit = analysis.label_audit(selection, False)
    st.markdown(summary(audit))
    st.subheader("FER2013's label against the FER+ majority")
    st.plotly_chart(analysis.label_figures(selection, False)["pairs"], key="labels_pairs", width="content")
    st.caption("Rows: FER2013's label; columns: the FER+ majority; the diagonal is where they agree.")
    st.subheader("The model, scored against each")
    scores(selection, audit)
    st.subheader("The disputed faces")
    gallery(audit, data.pixels)
