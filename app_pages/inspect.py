"""Inspect: one face large, where the model looks (the homework's heatmap and mask), and what it predicts."""

import streamlit as st

from ui import analysis, guards, keys, nav, sidebar
from ui.errors import shown_errors

st.title("Inspect")
selection = sidebar.selection()
guards.need_checkpoint(selection)
data = guards.need_data(selection)

from fercore import render  # noqa: E402 -- after the first paint
from fercore.data import IMAGE_SIZE  # noqa: E402
from fercore.labels import CLASS_NAMES  # noqa: E402
from fercore.saliency import Target  # noqa: E402

METHODS = {"gradient": "Gradient", "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated Gradients",
           "gradcam": "Grad-CAM"}
TARGETS = {"predicted": "Predicted class", "true": "True class", "class": "Any class", "contrast": "Contrast A − B"}
SCALINGS = {"homework": "Homework", "percentile": "99th percentile", "minmax": "Min-max"}
MASK_MODES = {"threshold": "Threshold", "top": "Top k%"}
CLASSES = list(range(len(CLASS_NAMES)))


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


def method_controls(selection, c1, c2) -> tuple[str, Target, dict]:
    method = c1.selectbox("Method", list(METHODS), format_func=METHODS.get, key=keys.METHOD,
                          persist_state="session")
    options: dict = {}
    if method == "smoothgrad":
        options["samples"] = c1.slider("Samples", 5, 100, 25, 5, key="w_sg_samples", persist_state="session")
        options["noise_level"] = c1.slider("Noise level", 0.0, 0.5, 0.15, 0.01, key="w_sg_noise",
                                           persist_state="session")
    elif method == "integrated_gradients":
        options["baseline"] = c1.selectbox("Baseline", ["black", "mean", "blur"], key="w_ig_baseline",
                                           persist_state="session")
        options["steps"] = c1.slider("Steps", 8, 128, 32, 8, key="w_ig_steps", persist_state="session")
    elif method == "gradcam":
        sizes, default = analysis.gradcam_layers(selection)
        layers = list(sizes)
        layer = options["layer"] = c1.selectbox("Layer", layers, index=layers.index(default), key="w_gc_layer")
        height, width = sizes[layer]
        c1.caption(f"{layer}'s map is {height}x{width}, upsampled to {IMAGE_SIZE}x{IMAGE_SIZE}."
                   if (height, width) != (IMAGE_SIZE, IMAGE_SIZE) else f"{layer}'s map is the face's own size.")
    mode = c2.selectbox("Target", list(TARGETS), format_func=TARGETS.get, key=keys.TARGET_MODE,
                        persist_state="session")
    a = b = 0
    if mode in ("class", "contrast"):
        a = c2.selectbox("Class A" if mode == "contrast" else "Class", CLASSES, format_func=CLASS_NAMES.__getitem__,
                         key=keys.CONTRAST_A if mode == "contrast" else keys.TARGET_CLASS, persist_state="session")
    if mode == "contrast":
        b = c2.selectbox("Class B", CLASSES, index=4, format_func=CLASS_NAMES.__getitem__, key=keys.CONTRAST_B,
                         persist_state="session")
    targets = {"predicted": Target.predicted(), "true": Target.true(), "class": Target.cls(int(a)),
               "contrast": Target.contrast(int(a), int(b))}
    return method, targets[mode], options


def display_controls(column) -> tuple[dict, dict]:
    """How the map is shown (fercore.render's scaling and smoothing) and which pixels the mask keeps; every
    default is fercore.render's, so the first view is the library's."""
    scaling = column.selectbox("Scaling", list(SCALINGS), index=list(SCALINGS).index(render.DEFAULT_SCALING),
                               format_func=SCALINGS.get, key="w_inspect_scaling", persist_state="session",
                               help="Homework: Keras' deprocess_image (0.5 is the face's mean saliency); 99th "
                                    "percentile: PAIR saliency's; min-max: the map's own range")
    smoothing = column.slider("Smoothing", 0.0, 3.0, render.DEFAULT_SMOOTHING, 0.5, format="%.1f px",
                              key="w_inspect_smoothing", persist_state="session",
                              help="Gaussian blur of the map before scaling (sigma in pixels); 0: none")
    mode = column.radio("Mask", list(MASK_MODES), format_func=MASK_MODES.get, horizontal=True,
                        key="w_inspect_mask_mode", persist_state="session")
    if mode == "top":
        mask = {"keep_top": column.slider("Keep the top", 0.05, 1.0, render.DEFAULT_KEEP_TOP, 0.05,
                                          format="percent", key="w_inspect_keep_top", persist_state="session",
                                          help="The share of the face's pixels the mask keeps, most salient first")}
    else:
        mask = {"threshold": column.slider("Mask threshold", 0.0, 1.0, render.DEFAULT_THRESHOLD, 0.05,
                                           key=keys.THRESHOLD, persist_state="session",
                                           help="The mask keeps the pixels whose scaled saliency is at least this")}
    return {"scaling": scaling, "smoothing": smoothing}, mask


guards.need_model(selection)  # a checkpoint that does not load stops the page here, with its reason

c0, c1, c2, c3 = st.columns([0.8, 1.2, 1.5, 1.3])
index = pick_image(c0)
method, target, options = method_controls(selection, c1, c2)
display, mask = display_controls(c3)
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
    o3.caption(f"Each pixel: the mean drop in the target's probability (the page's target: {TARGETS[target.kind]}) "
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
