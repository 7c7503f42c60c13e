"""Confusion: the matrix as a clickable grid; a cell's faces, most confident first; its mean face and saliency."""

import streamlit as st

from ui import analysis, guards, keys, nav, sidebar, sources
from ui.errors import shown_errors

st.title("Confusion")
selection = sidebar.selection()
guards.need_checkpoint(selection)
data = guards.need_data(selection, labels=True)

from fercore import render  # noqa: E402 -- after the first paint
from fercore.compare import csv_text  # noqa: E402
from fercore.evaluation import MEAN_SALIENCY_LIMIT  # noqa: E402
from fercore.ferplus import describe_votes  # noqa: E402
from fercore.labels import CLASS_NAMES  # noqa: E402
from fercore.report import most_confused  # noqa: E402
from fercore.saliency import Target  # noqa: E402

PAGE_SIZE, COLUMNS = 24, 8
FACES_PNG_LIMIT = 120  # ten rows of twelve: a cell's PNG stays a readable slide


def on_cell_click() -> None:
    """The chart's selection callback: a click on a cell selects it (a click that deselects keeps the cell)."""
    points = st.session_state[keys.CONFUSION_CHART].selection.points
    if points:  # a grid point's customdata is its [true, predicted] (fercore.render.confusion_figure)
        st.session_state[keys.CELL] = tuple(int(v) for v in points[0]["customdata"])
        st.session_state.pop(keys.GALLERY_PAGE, None)


@st.dialog("Where the model looks", width="large")
def quick_look(selection, index: int) -> None:
    """The homework's pictures of one face over the gallery, so a class can click through faces without leaving
    the cell; the Inspect page has every method, target and threshold."""
    with shown_errors("compute the saliency map"):
        result = analysis.image_analysis(selection, index, "gradient", Target.predicted(), {})
        st.markdown(result.summary(index, selection.split))
        for column, (title, image) in zip(st.columns(4), render.saliency_panels(result.pixels,
                                                                                  result.saliency).items()):
            column.image(render.upscale(image, 4), caption=title, width="stretch")
        st.caption(f"Vanilla gradient of the predicted class. {render.describe_mask()}")
    st.page_link(nav.INSPECT, label="Open in the Inspect page", icon=":material/center_focus_strong:")


def matrix_section(selection, result, tta: bool, normalized: bool):
    """The clickable matrix and the per-class table; returns the space under the table (for the cell's means)."""
    figure = analysis.confusion_figure(selection, tta, normalized)
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.plotly_chart(figure, key=keys.CONFUSION_CHART, on_select=on_cell_click, selection_mode="points",
                        width="content", config=render.CLICKABLE_CHART_CONFIG)
    with right:
        st.markdown("**Per class**")
        st.dataframe(analysis.metrics_table(result), hide_index=True)
        st.caption("Click a cell of the matrix to see its faces below.")
        name = f"{sources.checkpoint_label(selection.checkpoint)}_{selection.split}".replace(" ", "_")
        c1, c2 = st.columns(2)
        c1.download_button("Matrix (CSV)", csv_text(result.confusion_rows()), file_name=f"confusion_{name}.csv",
                           mime="text/csv", icon=":material/download:", key="w_confusion_csv", on_click="ignore")
        c2.download_button("Per class (CSV)", csv_text(result.per_class()), file_name=f"per_class_{name}.csv",
                           mime="text/csv", icon=":material/download:", key="w_per_class_csv", on_click="ignore")
        return st.container()


@st.fragment
def cell_explorer(selection, data, result, tta: bool, normalized: bool) -> None:
    """The matrix, then the clicked cell's faces and means, as a fragment: a cell click reruns only this part (and
    outside the page's error box, hence its own)."""
    with shown_errors("show the cell"):
        means_box = matrix_section(selection, result, tta, normalized)
        cell = st.session_state.get(keys.CELL)
        if cell is not None:
            true, pred = (int(v) for v in cell)
            gallery(selection, data, true, pred, analysis.cell_images(selection, true, pred, tta))
            with means_box, shown_errors("average the cell"):  # after the gallery, so the faces come first
                means_section(selection, true, pred, tta)


def gallery(selection, data, true: int, pred: int, cell) -> None:
    count = len(cell.indices)
    st.subheader(f"True {CLASS_NAMES[true]}, predicted {CLASS_NAMES[pred]}: {count} image{'s' * (count != 1)}")
    if count == 0:
        st.caption("No image falls in this cell.")
        return
    st.caption("Most confident first. Click **Inspect** under a face to see where the model looks.")
    in_png = cell.indices[:FACES_PNG_LIMIT]
    st.download_button(f"These faces (PNG, the {len(in_png)} most confident)",
                       lambda: render.faces_png(data.pixels[in_png]),  # made when clicked: a cell click stays quick
                       file_name=f"faces_true_{CLASS_NAMES[true]}_predicted_{CLASS_NAMES[pred]}.png",
                       mime="image/png", icon=":material/download:", key="w_cell_png", on_click="ignore")
    pages = (count + PAGE_SIZE - 1) // PAGE_SIZE
    if not 1 <= st.session_state.get(keys.GALLERY_PAGE, 1) <= pages:
        st.session_state.pop(keys.GALLERY_PAGE)
    page = st.pagination(pages, key=keys.GALLERY_PAGE) if pages > 1 else 1
    start = (page - 1) * PAGE_SIZE
    shown = list(range(start, min(start + PAGE_SIZE, count)))
    for row in range(0, len(shown), COLUMNS):
        for column, k in zip(st.columns(COLUMNS), shown[row:row + COLUMNS]):
            with column:
                face_card(selection, data, int(cell.indices[k]), cell.probabilities[k])


@st.fragment
def face_card(selection, data, index: int, probs) -> None:
    """One face of the gallery, a fragment of its own: its Inspect click reruns only this card and opens the quick
    look, without redrawing the matrix and the other faces, so the saliency shows in well under a second."""
    st.image(render.upscale(data.pixels[index], 2), width="stretch")
    ranked = probs.argsort()[::-1][:2]
    st.caption(" · ".join(f"{CLASS_NAMES[c]} {probs[c]:.0%}" for c in ranked)
               + (f"  \n{describe_votes(data.ferplus_votes[index])}" if data.ferplus_votes is not None else ""))
    if st.button("Inspect", key=f"w_pick_{index}", icon=":material/center_focus_strong:"):
        st.session_state[keys.IMAGE] = index  # the face the Inspect page shows
        quick_look(selection, index)


def means_section(selection, true: int, pred: int, tta: bool) -> None:
    with st.spinner("Averaging the cell's faces and saliency…"):
        face, saliency = analysis.cell_means(selection, true, pred, tta)
    if face is None:
        return
    face = render.to_uint8(face, 0, 255)
    st.markdown(f"**The cell on average** ({CLASS_NAMES[true]} as {CLASS_NAMES[pred]})")
    c1, c2, c3 = st.columns(3)
    c1.image(render.upscale(face, 3), caption="mean face")
    c2.image(render.upscale(render.heatmap(saliency), 3), caption="mean saliency")
    c3.image(render.upscale(render.overlay(face, saliency), 3), caption="overlay")
    st.caption(f"Saliency: vanilla gradient of the predicted class, mean over the {MEAN_SALIENCY_LIMIT} "
               "most confident faces at most.")


guards.need_model(selection)  # a checkpoint that does not load stops the page here, with its reason

c1, c2, _ = st.columns([1, 1, 2])
normalized = c1.toggle("Row-normalized", key=keys.NORMALIZED, persist_state="session",
                       help="Each row as shares of its true class, instead of image counts")
tta = c2.toggle("Flip TTA", key=keys.TTA, persist_state="session",
                help="Test-time augmentation: average the probabilities of each face and its mirror image")
with shown_errors("evaluate the checkpoint"):
    with st.spinner(f"Evaluating on {len(data)} images (once per checkpoint and data, shared by every session)…"):
        result = analysis.evaluation(selection, tta)
    st.caption(f"{sources.checkpoint_label(selection.checkpoint)} on {selection.data.label}, "
               f"{selection.split}: {len(result):,} images, accuracy **{result.accuracy:.1%}**, "
               f"macro F1 {result.macro_f1:.3f} ({result.tta_note}). "
               f"**{most_confused(result.confusion).sentence()}**")
    cell_explorer(selection, data, result, tta, normalized)
