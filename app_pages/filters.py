"""Filters: what a conv filter responds to (gradient ascent), a layer's outputs for a face, and its top faces."""

import streamlit as st

from ui import analysis, figures, guards, keys, sidebar
from ui.errors import shown_errors

st.title("Filters")
selection = sidebar.selection()
guards.need_checkpoint(selection)
data = guards.need_data(selection)

from fercore import render  # noqa: E402 -- after the first paint
from fercore.models import conv_layers  # noqa: E402

MODES = {"grid": "Whole layer", "one": "One filter"}

scope = None
with shown_errors("load the checkpoint"):
    scope = analysis.scope(selection)
if scope is None:
    st.stop()
layers = conv_layers(guards.need_model(selection).model)


def controls() -> tuple[str, str, int, dict]:
    c1, c2, c3 = st.columns([1.2, 1, 1])
    layer = c1.selectbox("Layer", list(layers), key=keys.LAYER, persist_state="session",
                         help="Conv layers from input to output: deeper layers respond to larger, more abstract "
                              "patterns, and take longer to render")
    mode = c2.segmented_control("Show", list(MODES), format_func=MODES.get, default="grid", required=True,
                                key=keys.FILTER_MODE, persist_state="session")
    count = layers[layer].out_channels
    if st.session_state.get(keys.FILTER_INDEX, 0) >= count:
        st.session_state[keys.FILTER_INDEX] = 0
    filter_index = c3.number_input(f"Filter (0 – {count - 1})", 0, count - 1, key=keys.FILTER_INDEX,
                                   persist_state="session", help="For one-filter mode and the top images")
    with st.expander("Gradient ascent settings", icon=":material/tune:"):
        r1, r2, r3, r4 = st.columns(4)
        params = {
            "steps": r1.slider("Steps", 10, 300, 100, 10, key="w_fa_steps", persist_state="session"),
            "lr": r1.slider("Step size", 0.01, 0.2, 0.05, 0.01, key="w_fa_lr", persist_state="session"),
            "l2_decay": r2.slider("L2 decay", 0.0, 0.1, 0.0, 0.005, format="%.3f", key="w_fa_l2",
                                  persist_state="session"),
            "tv_weight": r2.slider("Total variation", 0.0, 2.0, 0.0, 0.1, key="w_fa_tv", persist_state="session"),
            "blur_every": r3.slider("Blur every (steps, 0 = off)", 0, 20, 4, 1, key="w_fa_blur_every",
                                    persist_state="session"),
            "blur_sigma": r3.slider("Blur sigma (px)", 0.2, 2.0, 0.5, 0.1, key="w_fa_blur_sigma",
                                    persist_state="session"),
            "jitter": r4.slider("Jitter (px)", 0, 4, 1, 1, key="w_fa_jitter", persist_state="session"),
            "seed": int(r4.number_input("Seed", 0, 2**31 - 1, 0, key="w_fa_seed", persist_state="session")),
        }
    return layer, mode, int(filter_index), params


def ascent_section(layer: str, mode: str, filter_index: int, params: dict) -> None:
    filters = None if mode == "grid" else (filter_index,)
    what = f"all {layers[layer].out_channels} filters of {layer}" if filters is None else \
        f"filter {filter_index} of {layer}"
    result = analysis.cached_filters(scope, layer, filters, params)
    if result is None:
        if not st.button(f"Render {what}", type="primary", icon=":material/play_arrow:", key="w_fa_render"):
            st.caption("Gradient ascent from seeded noise: the image that makes each filter respond most. "
                       "Deep layers take a while on a CPU; once rendered, every session sees the result at once.")
            return
        bar = st.progress(0.0, text=f"Rendering {what}…")
        last = [-1.0]

        def on_progress(fraction: float, message: str) -> None:
            if fraction - last[0] >= 0.02 or fraction >= 1.0:
                last[0] = fraction
                bar.progress(fraction, text=f"Rendering {what}: {message}")

        result = analysis.visualize_filters(scope, layer, filters, params, on_progress)
        bar.empty()
    if filters is None:
        st.image(figures.filter_grid(result.images, result.dead), caption=f"{what}, filter 0 top left, row by row")
    else:
        st.image(render.upscale(render.to_uint8(result.images[0]), 6), caption=what)
    dead = [int(f) for f, d in zip(result.filters, result.dead) if d]
    st.caption(f"Mean response reached: {result.activations.min():.2f} – {result.activations.max():.2f} "
               f"(from {result.start_activations.mean():.2f} at the noise start). "
               + (f"**Dead** (framed red, never respond): {', '.join(map(str, dead))}." if dead else
                  "No dead filters."))


def outputs_section(layer: str) -> None:
    index = st.session_state.get(keys.IMAGE)
    index = index if index is not None and 0 <= index < len(data) else 0
    st.subheader(f"Outputs of {layer} for image {index}")
    outputs = analysis.layer_outputs(scope, layer, index)
    left, right = st.columns([1, 4])
    left.image(render.upscale(data.pixels[index], 3), caption="input")
    right.image(render.upscale(render.grid(outputs, ncols=16), 2),
                caption=f"{len(outputs)} channels, {outputs.shape[1]}x{outputs.shape[2]}, each scaled on its own")


def top_section(layer: str, filter_index: int) -> None:
    st.subheader(f"Faces that excite filter {filter_index} of {layer} most")
    with st.spinner("Scanning the split…"):
        top = analysis.top_activating(scope, layer, filter_index, k=8)
    columns = st.columns(len(top.indices))
    for column, i, score, region in zip(columns, top.indices, top.scores, top.regions):
        column.image(render.upscale(figures.boxed(data.pixels[i], region), 3), caption=f"#{i} · {score:.2f}")
    st.caption("The red box is the part of the face the strongest unit sees (its receptive field).")


layer, mode, filter_index, params = controls()
with shown_errors("render the filters"):
    ascent_section(layer, mode, filter_index, params)
with shown_errors("compute the layer outputs"):
    outputs_section(layer)
with shown_errors("find the top images"):
    top_section(layer, filter_index)
