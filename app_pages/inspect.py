"""Inspect: one face large, where the model looks (the homework's heatmap and mask), and what it predicts."""

import streamlit as st

from ui import analysis, guards, keys, nav, saliency_controls, sidebar
from ui.errors import shown_errors

st.title("Inspect")
selection = sidebar.selection()
guards.need_checkpoint(selection)
data = guards.need_data(selection)

from fercore import render  # noqa: E402 -- after the first paint
from fercore.data import IMAGE_SIZE  # noqa: E402


def pick_image(column) -> int:
    """The selected image (from the Confusion gallery, or typed here), kept in keys.IMAGE."""
    index = st.session_state.get(keys.IMAGE)
    if index is None or not 0 <= index < len(data):
        index = 0
    st.session_state["w_inspect_index"] = index
    picked = column.number_input(f"Face (0 – {len(data) - 1})", 0, len(data) - 1, key="w_inspect_index",
                                 help=f"Its position in {selection.split}; or click a face on the Confusion page")
    st.session_state[keys.IMAGE] = int(picked)
    return int(picked)


guards.need_model(selection)  # a checkpoint that does not load stops the page here, with its reason

c0, c1, c2, c3 = st.columns([0.8, 1.2, 1.5, 1.3])
index = pick_image(c0)
method, target, options = saliency_controls.method_controls(selection, c1, c2)
display, mask = saliency_controls.display_controls(c3)
with shown_errors("compute the saliency map"):
    result = analysis.image_analysis(selection, index, method, target, options)
    panels = render.saliency_panels(result.pixels, result.saliency, **display, **mask)
    st.markdown(result.summary(index, selection.split))
    columns = st.columns(4)
    for column, (title, image) in zip(columns, panels.items()):
        column.image(render.upscale(image, 6), caption=title, width="stretch")
    st.caption(render.describe_mask(scaling=display["scaling"], **mask))
    st.download_button("Download PNG", render.panels_png(panels), file_name=f"saliency_{result.image_id}_"
                       f"{method}.png", mime="image/png", icon=":material/download:", key="w_inspect_download")
    left, right = st.columns(2)
    left.plotly_chart(render.probability_bars(result.probabilities, true=result.label, title="Probabilities"),
                      key="inspect_probabilities")
    if result.votes is not None:
        right.plotly_chart(render.ferplus_vote_bars(result.votes), key="inspect_votes")
    else:
        right.caption("No FER+ votes for this data (the shipped file and fer2013.npz carry them).")


# ------------------------------------------------------------------------------------------------ occlusion

from fercore import occlusion  # noqa: E402

REGION_NAMES = {**{name: name.capitalize() for name in occlusion.REGIONS}, "free": "A rectangle"}

st.subheader("Occlusion: cover part of the face, what changes?")
o1, o2, o3 = st.columns([1, 1.2, 1.8])
patch = o1.slider("Patch", 2, 24, occlusion.DEFAULT_PATCH, 1, format="%d px", key=keys.OCCLUSION_PATCH,
                  persist_state="session", help="The side of the grey square slid over the face")
stride = o1.slider("Stride", 1, 12, occlusion.DEFAULT_STRIDE, 1, format="%d px", key=keys.OCCLUSION_STRIDE,
                   persist_state="session", help="How far the square moves between positions")
with shown_errors("compute the occlusion map"):
    drops = analysis.occlusion(selection, index, target, patch, stride)
    o2.image(render.upscale(render.signed_heatmap(drops), 6), caption="Occlusion map", width="stretch")
    o3.caption(f"Each pixel: the mean drop in the target's probability (the page's target: "
               f"{saliency_controls.TARGETS[target.kind]}) "
               f"over the {patch}x{patch} px grey squares covering it, every {stride} px. Red: covering it lowers "
               f"the probability (by up to {max(drops.max(), 0):.0%} here), blue: raises it (by up to "
               f"{max(-drops.min(), 0):.0%}), white: no change; one colour scale, symmetric about 0.")

st.markdown("**Cover a region**")
r1, r2, r3, r4 = st.columns([1, 1.2, 1.4, 1.4])
region = r1.radio("Region", list(REGION_NAMES), format_func=REGION_NAMES.get, key=keys.COVER_REGION,
                  persist_state="session")
if region == "free":
    top, bottom = r1.slider("Rows", 0, IMAGE_SIZE, occlusion.REGIONS["mouth"][::2], key=keys.COVER_ROWS,
                            persist_state="session", help="From the top row to the bottom one (exclusive)")
    left, right = r1.slider("Columns", 0, IMAGE_SIZE, occlusion.REGIONS["mouth"][1::2], key=keys.COVER_COLUMNS,
                            persist_state="session", help="From the left column to the right one (exclusive)")
    region = (top, left, bottom, right)
with shown_errors("cover the region"):
    face, before, after = analysis.covered(selection, index, region)
    r2.image(render.upscale(face, 6), caption="Covered with the face's mean grey", width="stretch")
    r3.plotly_chart(render.probability_bars(before, title="Before"), key="inspect_cover_before")
    r4.plotly_chart(render.probability_bars(after, title="After"), key="inspect_cover_after")

st.page_link(nav.CONFUSION, label="Back to the confusion matrix", icon=":material/grid_on:")
