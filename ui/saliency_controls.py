"""The saliency settings a page shows above a face's heatmap and mask: method, target and display. The Inspect
page (a data set's face) and the Try it page (a photo's face) call the same functions; every default is
fercore's, so a page's first view is the library's."""

from __future__ import annotations

from ui import analysis, keys

METHODS = {"gradient": "Gradient", "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated Gradients",
           "gradcam": "Grad-CAM"}
TARGETS = {"predicted": "Predicted class", "true": "True class", "class": "Any class", "contrast": "Contrast A − B"}
SCALINGS = {"homework": "Homework", "percentile": "99th percentile", "minmax": "Min-max"}
MASK_MODES = {"threshold": "Threshold", "top": "Top k%"}


def method_controls(selection, c1, c2, labelled: bool = True, suffix: str = ""):
    """(method, fercore.saliency.Target, the method's options). `labelled`: offer the true class as a target
    (a photo has none). `suffix` is added to every widget key, so two pages keep their own settings."""
    from fercore.data import IMAGE_SIZE
    from fercore.labels import CLASS_NAMES
    from fercore.saliency import Target

    classes = list(range(len(CLASS_NAMES)))
    method = c1.selectbox("Method", list(METHODS), format_func=METHODS.get, key=keys.METHOD + suffix,
                          persist_state="session")
    options: dict = {}
    if method == "smoothgrad":
        options["samples"] = c1.slider("Samples", 5, 100, 25, 5, key="w_sg_samples" + suffix,
                                       persist_state="session")
        options["noise_level"] = c1.slider("Noise level", 0.0, 0.5, 0.15, 0.01, key="w_sg_noise" + suffix,
                                           persist_state="session")
    elif method == "integrated_gradients":
        options["baseline"] = c1.selectbox("Baseline", ["black", "mean", "blur"], key="w_ig_baseline" + suffix,
                                           persist_state="session")
        options["steps"] = c1.slider("Steps", 8, 128, 32, 8, key="w_ig_steps" + suffix, persist_state="session")
    elif method == "gradcam":
        sizes, default = analysis.gradcam_layers(selection)
        layers = list(sizes)
        layer = options["layer"] = c1.selectbox("Layer", layers, index=layers.index(default),
                                                key="w_gc_layer" + suffix)
        height, width = sizes[layer]
        c1.caption(f"{layer}'s map is {height}x{width}, upsampled to {IMAGE_SIZE}x{IMAGE_SIZE}."
                   if (height, width) != (IMAGE_SIZE, IMAGE_SIZE) else f"{layer}'s map is the face's own size.")
    targets = {mode: name for mode, name in TARGETS.items() if labelled or mode != "true"}
    mode = c2.selectbox("Target", list(targets), format_func=targets.get, key=keys.TARGET_MODE + suffix,
                        persist_state="session")
    a = b = 0
    if mode in ("class", "contrast"):
        a = c2.selectbox("Class A" if mode == "contrast" else "Class", classes, format_func=CLASS_NAMES.__getitem__,
                         key=(keys.CONTRAST_A if mode == "contrast" else keys.TARGET_CLASS) + suffix,
                         persist_state="session")
    if mode == "contrast":
        b = c2.selectbox("Class B", classes, index=4, format_func=CLASS_NAMES.__getitem__,
                         key=keys.CONTRAST_B + suffix, persist_state="session")
    built = {"predicted": Target.predicted, "true": Target.true, "class": lambda: Target.cls(int(a)),
             "contrast": lambda: Target.contrast(int(a), int(b))}
    return method, built[mode](), options


def display_controls(column, suffix: str = "") -> tuple[dict, dict]:
    """How the map is shown (fercore.render's scaling and smoothing) and which pixels the mask keeps."""
    from fercore import render

    scaling = column.selectbox("Scaling", list(SCALINGS), index=list(SCALINGS).index(render.DEFAULT_SCALING),
                               format_func=SCALINGS.get, key="w_inspect_scaling" + suffix, persist_state="session",
                               help="Homework: Keras' deprocess_image (0.5 is the face's mean saliency); 99th "
                                    "percentile: PAIR saliency's; min-max: the map's own range")
    smoothing = column.slider("Smoothing", 0.0, 3.0, render.DEFAULT_SMOOTHING, 0.5, format="%.1f px",
                              key="w_inspect_smoothing" + suffix, persist_state="session",
                              help="Gaussian blur of the map before scaling (sigma in pixels); 0: none")
    mode = column.radio("Mask", list(MASK_MODES), format_func=MASK_MODES.get, horizontal=True,
                        key="w_inspect_mask_mode" + suffix, persist_state="session")
    if mode == "top":
        mask = {"keep_top": column.slider("Keep the top", 0.05, 1.0, render.DEFAULT_KEEP_TOP, 0.05,
                                          format="percent", key="w_inspect_keep_top" + suffix,
                                          persist_state="session",
                                          help="The share of the face's pixels the mask keeps, most salient first")}
    else:
        mask = {"threshold": column.slider("Mask threshold", 0.0, 1.0, render.DEFAULT_THRESHOLD, 0.05,
                                           key=keys.THRESHOLD + suffix, persist_state="session",
                                           help="The mask keeps the pixels whose scaled saliency is at least this")}
    return {"scaling": scaling, "smoothing": smoothing}, mask
