"""Filters: what a conv filter responds to (gradient ascent), a layer's outputs for a face, and its top faces."""

import streamlit as st

from ui import analysis, guards, keys, sidebar
from ui.errors import shown_errors

st.title("Filters")
selection = sidebar.selection()
guards.need_checkpoint(selection)
data = guards.need_data(selection)

from fercore import render  # noqa: E402 -- after the first paint
from fercore.filters import DEFAULT_SEED  # noqa: E402
from fercore.models import conv_layers  # noqa: E402

MODES = {"grid": "Whole layer", "one": "One filter"}

OBJECTIVES = {"channel": "Mean response (whole map)", "neuron": "Centre unit"}
PARAMETERISATIONS = {"pixel": "Pixels (clipped to the range)", "sigmoid": "Squashed (always inside the range)",
                     "spectral": "Spectral (1/frequency, smooth)"}
STAGES = {"pre_relu": "Before the ReLU", "activation": "After the ReLU", "conv": "Conv output (before BN)"}


def ascent_settings(selection, layer: str) -> dict:
    """The gradient-ascent settings, starting at fercore's defaults for this layer (chosen by its receptive field);
    each layer keeps its own."""
    default = analysis.ascent_defaults(selection, layer)

    def key(name: str) -> str:
        return f"w_fa_{name}@{layer}"

    def choice(column, label: str, name: str, options: dict, help: str):
        return column.selectbox(label, list(options), index=list(options).index(default[name]),
                                format_func=options.get, key=key(name), persist_state="session", help=help)

    with st.expander("Gradient ascent settings", icon=":material/tune:"):
        st.caption("The defaults depend on how much of the face the layer's units see: small fields (first layers) "
                   "maximise the mean response after the ReLU in squashed pixels, which gives the grating each "
                   "filter is tuned to; larger fields the response before the ReLU, with jitter and a light blur.")
        r0, r1, r2, r3, r4 = st.columns(5)
        return {
            "objective": choice(r0, "Objective", "objective", OBJECTIVES,
                                "What each image maximises: its filter's mean response over the whole output "
                                "map, or the response of the unit at its centre"),
            "stage": choice(r0, "Response", "stage", STAGES, "Where the filter's response is read"),
            "param": choice(r1, "Image", "param", PARAMETERISATIONS, "What gradient ascent changes"),
            "steps": r1.slider("Steps", 10, 300, default["steps"], 10, key=key("steps"), persist_state="session"),
            "lr": r2.slider("Step size", 0.01, 0.2, default["lr"], 0.01, key=key("lr"), persist_state="session"),
            "l2_decay": r2.slider("L2 decay", 0.0, 0.1, default["l2_decay"], 0.005, format="%.3f",
                                  key=key("l2_decay"), persist_state="session",
                                  help="Pull towards mid-grey after every step"),
            "tv_weight": r3.slider("Total variation", 0.0, 2.0, default["tv_weight"], 0.1, key=key("tv_weight"),
                                   persist_state="session"),
            "blur_every": r3.slider("Blur every (steps, 0 = off)", 0, 20, default["blur_every"], 1,
                                    key=key("blur_every"), persist_state="session"),
            "blur_sigma": r4.slider("Blur sigma (px)", 0.2, 2.0, default["blur_sigma"], 0.1, key=key("blur_sigma"),
                                    persist_state="session"),
            "jitter": r4.slider("Jitter (px)", 0, 4, default["jitter"], 1, key=key("jitter"),
                                persist_state="session"),
            "seed": int(r4.number_input("Seed", 0, 2**31 - 1, DEFAULT_SEED, key=key("seed"), persist_state="session")),
        }


def controls(selection, layers: dict) -> tuple[str, str, int, dict]:
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
    return layer, mode, int(filter_index), ascent_settings(selection, layer)


def kernels_column(selection, column, layer: str, filters: tuple | None) -> None:
    """The first layer's kernels (the weights themselves) beside its ascent images."""
    kernels = analysis.layer_kernels(selection, layer)
    if kernels is None:
        return
    shown = kernels if filters is None else kernels[list(filters)]
    picture = render.kernel_grid(shown, limit=float(abs(kernels).max()), pixel=10 if filters is None else 40)
    column.image(picture, caption=f"{'Kernels' if filters is None else 'Kernel'} of {layer}, the same order")
    column.caption(f"Each filter's {kernels.shape[1]}x{kernels.shape[2]} weights, all on one colour scale: "
                   f"**blue** negative, **white** 0, **red** positive (±{abs(kernels).max():.2f}). The filter "
                   "responds most where the face is bright under red and dark under blue.")
    column.download_button("Kernels (PNG)", render.png_bytes(picture), file_name=f"{layer}_kernels.png",
                           mime="image/png", icon=":material/download:", key="w_fa_download_kernels")


def ascent_section(selection, layers: dict, layer: str, mode: str, filter_index: int, params: dict) -> None:
    filters = None if mode == "grid" else (filter_index,)
    what = f"all {layers[layer].out_channels} filters of {layer}" if filters is None else \
        f"filter {filter_index} of {layer}"
    result = analysis.cached_filters(selection, layer, filters, params)
    if result is None:
        if not st.button(f"Render {what}", type="primary", icon=":material/play_arrow:", key="w_fa_render"):
            st.caption("Gradient ascent from seeded noise: the image that makes each filter respond most. "
                       "Deep layers take a while on a CPU; once rendered, every session sees the result at once.")
            kernels_column(selection, st, layer, filters)
            return
        bar = st.progress(0.0, text=f"Rendering {what}…")
        last = [-1.0]

        def on_progress(fraction: float, message: str) -> None:
            if fraction - last[0] >= 0.02 or fraction >= 1.0:
                last[0] = fraction
                bar.progress(fraction, text=f"Rendering {what}: {message}")

        result = analysis.visualize_filters(selection, layer, filters, params, on_progress)
        bar.empty()
    left, right = st.columns([3, 2]) if analysis.layer_kernels(selection, layer) is not None else (st, None)
    picture = render.filter_grid(result.images, result.dead) if filters is None else \
        render.upscale(render.to_uint8(result.images[0]), 6)
    left.image(picture, caption=f"{what}, filter 0 top left, row by row" if filters is None else what)
    left.download_button("Gradient-ascent images (PNG)", render.png_bytes(picture), file_name=f"{layer}_ascent.png",
                         mime="image/png", icon=":material/download:", key="w_fa_download_ascent")
    if right is not None:
        kernels_column(selection, right, layer, filters)
    dead = [int(f) for f, d in zip(result.filters, result.dead) if d]
    reached = "Centre unit's response" if result.objective == "neuron" else "Mean response"
    st.caption(f"{reached} reached ({STAGES[result.stage].lower()}): {result.activations.min():.2f} – "
               f"{result.activations.max():.2f} (from {result.start_activations.mean():.2f} at the noise start). "
               + (f"**Dead** (framed red, never respond): {', '.join(map(str, dead))}." if dead else
                  "No dead filters."))


def outputs_section(selection, data, layer: str) -> None:
    index = st.session_state.get(keys.IMAGE)
    index = index if index is not None and 0 <= index < len(data) else 0
    st.subheader(f"Outputs of {layer} for image {index}")
    outputs = analysis.layer_outputs(selection, layer, index)
    left, right = st.columns([1, 4])
    left.image(render.upscale(data.pixels[index], 3), caption="input")
    picture = render.upscale(render.grid(outputs, ncols=16), 2)
    right.image(picture, caption=f"{len(outputs)} channels, {outputs.shape[1]}x{outputs.shape[2]}, each scaled on "
                                 "its own")
    right.download_button("Layer outputs (PNG)", render.png_bytes(picture), file_name=f"{layer}_outputs_{index}.png",
                          mime="image/png", icon=":material/download:", key="w_fa_download_outputs")


def top_section(selection, data, layer: str, filter_index: int) -> None:
    st.subheader(f"Faces that excite filter {filter_index} of {layer} most")
    with st.spinner("Scanning the split…"):
        top = analysis.top_activating(selection, layer, filter_index, 8)
    columns = st.columns(len(top.indices))
    for column, i, score, region in zip(columns, top.indices, top.scores, top.regions):
        column.image(render.upscale(render.boxed(data.pixels[i], region), 3), caption=f"#{i} · {score:.2f}")
    st.caption("The red box is the part of the face the strongest unit sees (its receptive field).")


layers = conv_layers(guards.need_model(selection).model)  # a checkpoint that does not load stops here
layer, mode, filter_index, params = controls(selection, layers)
with shown_errors("render the filters"):
    ascent_section(selection, layers, layer, mode, filter_index, params)
with shown_errors("compute the layer outputs"):
    outputs_section(selection, data, layer)
with shown_errors("find the top images"):
    top_section(selection, data, layer, filter_index)
