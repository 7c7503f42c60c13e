"""The app's calls into fercore's analysis, cached and shared across sessions.

Each function takes plain hashable arguments (paths, keys, names, numbers) so Streamlit's caches can key on them,
sets the torch thread count for the moment (one thread while a job trains), and holds the model's lock while it
hooks into the shared model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from ui import loaders, sources
from ui.computelog import computing
from ui.shared import shared_results
from ui.sidebar import Selection
from ui.threads import use_app_threads

if TYPE_CHECKING:  # fercore.saliency imports torch, which the first paint must not wait for
    from fercore.saliency import Target


@dataclass(frozen=True)
class Scope:
    """A checkpoint, data and split: what every analysis result depends on, as cache keys."""

    checkpoint: str
    model_key: str
    data: sources.DataChoice
    split: str

    @property
    def key(self) -> tuple:
        return self.model_key, self.data.key, self.split


def scope(selection: Selection) -> Scope:
    loaded = loaders.model(selection.checkpoint)
    return Scope(selection.checkpoint, loaded.key, selection.data, selection.split)


def _loaded(s: Scope):
    return loaders.model(s.checkpoint)


def _images(s: Scope):
    return loaders.split_dataset(Selection(s.checkpoint, s.data, s.split))


# ------------------------------------------------------------------------------------------------ saliency

@dataclass
class ImageAnalysis:
    pixels: np.ndarray         # uint8 (48, 48)
    saliency: np.ndarray       # float32 (48, 48)
    probabilities: np.ndarray  # float32 (7,)
    label: int | None
    votes: np.ndarray | None   # uint8 (10,) FER+ votes, when known
    image_id: str

    def summary(self, index: int, split: str) -> str:
        """'Face 12 of PrivateTest (id 32310) · predicted **Sad** (47%) · true **Fear**', as markdown."""
        from fercore.labels import CLASS_NAMES

        predicted = int(self.probabilities.argmax())
        text = (f"Face {index} of {split} (id {self.image_id}) · predicted **{CLASS_NAMES[predicted]}** "
                f"({self.probabilities[predicted]:.0%})")
        return text + (f" · true **{CLASS_NAMES[self.label]}**" if self.label is not None else "")


@st.cache_data(show_spinner=False, max_entries=256)
def _image_analysis(key: tuple, _s: Scope, index: int, method: str, target: Target, options: tuple):
    loaded, data = _loaded(_s), _images(_s)
    if not 0 <= index < len(data):
        raise ValueError(f"image {index} is not in this split ({len(data)} images)")
    label = None if data.labels is None else int(data.labels[index])
    probabilities, saliency = face_analysis(loaded, data.pixels[index], method, target.with_labels(label), options)
    votes = None if data.ferplus_votes is None else data.ferplus_votes[index]
    return ImageAnalysis(data.pixels[index], saliency, probabilities, label, votes, str(data.ids[index]))


def face_analysis(loaded, pixels: np.ndarray, method: str, target: Target, options: dict | tuple) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (7,), saliency (48, 48)) of any uint8 face (48, 48), from a data set or an upload:
    fercore.saliency.explain_faces on the shared model, under its lock, with the app's threads."""
    from fercore.saliency import explain_faces

    use_app_threads(batch=method in ("smoothgrad", "integrated_gradients"))  # tens of noisy copies or path points
    with loaders.model_lock(loaded):
        probabilities, saliency = explain_faces(loaded, pixels, method, target, **dict(options))
    return probabilities[0], saliency[0]


def image_analysis(s: Scope, index: int, method: str, target: Target, options: dict) -> ImageAnalysis:
    """One image's saliency map (fercore.saliency), class probabilities and FER+ votes."""
    return _image_analysis((*s.key, s.checkpoint), s, int(index), method, target, tuple(sorted(options.items())))


@st.cache_resource(show_spinner=False, max_entries=16)
def _gradcam_layers(key: tuple, _s: Scope) -> tuple[dict, str]:
    from fercore.saliency import conv_map_sizes, default_gradcam_layer

    loaded = _loaded(_s)
    with loaders.model_lock(loaded):
        return conv_map_sizes(loaded.model), default_gradcam_layer(loaded.model)


def gradcam_layers(s: Scope) -> tuple[dict[str, tuple[int, int]], str]:
    """The model's conv layers with their map sizes (H, W), input to output, and Grad-CAM's default among them."""
    return _gradcam_layers(s.key, s)


# ------------------------------------------------------------------------------------------------- filters

@st.cache_resource(show_spinner=False, max_entries=8)
def _input_range(key: tuple, _s: Scope) -> tuple[float, float]:
    """The model's input value range on the split's faces (LoadedModel.input_range, as fercore.report has it):
    gradient ascent keeps its pixels inside it."""
    return _loaded(_s).input_range(_images(_s).pixels)


@st.cache_data(show_spinner=False, max_entries=64)
def _ascent_defaults(key: str, _s: Scope, layer: str) -> dict:
    from fercore.filters import default_settings

    loaded = _loaded(_s)
    with loaders.model_lock(loaded):
        return default_settings(loaded.model, layer)


def ascent_defaults(s: Scope, layer: str) -> dict:
    """fercore.filters.default_settings: what visualize_filters does for this layer when told nothing."""
    return _ascent_defaults(s.model_key, s, layer)


@st.cache_data(show_spinner=False, max_entries=16)
def _layer_kernels(key: str, _s: Scope, layer: str) -> np.ndarray | None:
    from fercore.filters import find_layer, layer_kernels

    loaded = _loaded(_s)
    with loaders.model_lock(loaded):
        site = find_layer(loaded.model, layer)
        if not site.reads_image or site.conv.in_channels != 1:
            return None
        return layer_kernels(loaded.model, layer)


def layer_kernels(s: Scope, layer: str) -> np.ndarray | None:
    """fercore.filters.layer_kernels for a layer that reads the image, None for a deeper one (its kernels weigh
    feature maps, not pixels)."""
    return _layer_kernels(s.model_key, s, layer)


def filter_key(s: Scope, layer: str, filters: tuple | None, params: dict) -> tuple:
    return ("filters", s.model_key, layer, filters, tuple(sorted(params.items())))


def cached_filters(s: Scope, layer: str, filters: tuple | None, params: dict):
    """The gradient-ascent result if some session computed it already, else None (never computes)."""
    return shared_results().peek(filter_key(s, layer, filters, params))


def visualize_filters(s: Scope, layer: str, filters: tuple | None, params: dict, on_progress=None):
    """fercore.filters.visualize_filters, computed once per server for these settings (other sessions asking
    meanwhile follow the same progress). Runs on a private copy of the model: it hooks into modules for seconds,
    and saliency clicks on the shared model must not wait for it or see its hooks."""
    from fercore.filters import visualize_filters as ascend

    def compute(report):
        loaded = _loaded(s)
        with loaders.model_lock(loaded):
            model = copy.deepcopy(loaded.model)
        use_app_threads()
        steps = params["steps"]
        report(0.0, f"0 / {steps} steps")
        with computing(f"filters of {layer} ({len(filters) if filters else 'all'}, {steps} steps)"):
            return ascend(model, layer, list(filters) if filters else None, value_range=_input_range(s.key, s),
                          progress=lambda step, total: report(step / total, f"{step} / {total} steps"), **params)

    return shared_results().get(filter_key(s, layer, filters, params), compute, on_progress)


@st.cache_data(show_spinner=False, max_entries=64)
def _layer_outputs(key: tuple, _s: Scope, layer: str, index: int) -> np.ndarray:
    from fercore.filters import layer_outputs

    loaded, data = _loaded(_s), _images(_s)
    use_app_threads(batch=False)
    with loaders.model_lock(loaded):
        return layer_outputs(loaded.model, loaded.preprocess(data.pixels[index:index + 1]), layer)[0]


def layer_outputs(s: Scope, layer: str, index: int) -> np.ndarray:
    """float32 (C, H, W): every channel of `layer` for image `index` of the split."""
    return _layer_outputs(s.key, s, layer, int(index))


@st.cache_resource(show_spinner=False, max_entries=32)
def _top_activating(key: tuple, _s: Scope, layer: str, filter_index: int, k: int):
    from fercore.filters import top_activating

    loaded, data = _loaded(_s), _images(_s)
    use_app_threads()
    with loaders.model_lock(loaded), computing(f"top activating images of {layer} filter {filter_index}"):
        return top_activating(loaded.model, loaded.preprocess(data.pixels), layer, filter_index, k=k)


def top_activating(s: Scope, layer: str, filter_index: int, k: int = 8):
    """fercore.filters.top_activating over the whole split (cached per server)."""
    return _top_activating(s.key, s, layer, int(filter_index), int(k))


# ---------------------------------------------------------------------------------------------- evaluation

MEAN_SALIENCY_LIMIT = 128  # the cell's most confident images in its mean saliency (a backward pass each)


@st.cache_resource(show_spinner=False, max_entries=16)
def _evaluation(key: tuple, _s: Scope, tta: bool):
    from fercore.evaluation import evaluate_checkpoint

    loaded = _loaded(_s)
    use_app_threads()
    # evaluate copies the model (hooks included): hold the lock so no saliency hook of another session comes along.
    with loaders.model_lock(loaded), computing(f"evaluation on {_s.split} (tta {tta})"):
        # The split's own rows are the dataset here, so cell indices are positions in the split, as keys.IMAGE is.
        return evaluate_checkpoint(loaded, _images(_s), tta=tta)


def evaluation(s: Scope, tta: bool = False):
    """fercore.evaluation's Evaluation of the checkpoint on the split (with flip TTA or not): once per server,
    and cached on disk by fercore, so reopening the app is instant."""
    return _evaluation(s.key, s, bool(tta))


def metrics_table(result) -> dict:
    """Per-class precision / recall / F1 / support as columns for st.dataframe."""
    rows = result.per_class()
    return {"class": [r["cls"] for r in rows], "precision": [round(r["precision"], 3) for r in rows],
            "recall": [round(r["recall"], 3) for r in rows], "F1": [round(r["f1"], 3) for r in rows],
            "images": [r["support"] for r in rows]}


def cell_images(s: Scope, true: int, pred: int, tta: bool = False):
    """The cell's CellImages (split positions and probabilities), most confident first."""
    return evaluation(s, tta).cell(true, pred)


@st.cache_resource(show_spinner=False, max_entries=64)
def _cell_means(key: tuple, _s: Scope, true: int, pred: int, tta: bool):
    from fercore.evaluation import cell_mean_face, cell_mean_saliency

    loaded, data, result = _loaded(_s), _images(_s), evaluation(_s, tta)
    face = cell_mean_face(result, data, true, pred)
    if face is None:
        return None, None
    use_app_threads()
    with loaders.model_lock(loaded), computing(f"mean face and saliency of cell ({true}, {pred})"):
        saliency = cell_mean_saliency(result, loaded.model, loaded.normalizer, data, true, pred,
                                      limit=MEAN_SALIENCY_LIMIT)
    return face, saliency


def cell_means(s: Scope, true: int, pred: int, tta: bool = False):
    """(mean face float32 0..255, mean vanilla-gradient saliency of its most confident images) of the cell, or
    (None, None) when it is empty."""
    return _cell_means(s.key, s, int(true), int(pred), bool(tta))


@st.cache_resource(show_spinner=False, max_entries=16)
def _confusion_figure(key: tuple, _s: Scope, tta: bool, normalized: bool):
    from fercore import render

    return render.confusion_figure(evaluation(_s, tta).confusion, normalized=normalized)


def confusion_figure(s: Scope, tta: bool, normalized: bool):
    """fercore.render's clickable confusion grid for this evaluation, built once (every click reruns the page)."""
    return _confusion_figure(s.key, s, bool(tta), bool(normalized))


# ------------------------------------------------------------------------------------------- model and runs

@st.cache_resource(show_spinner=False, max_entries=16)
def _model_summary(model_key: str, checkpoint: str):
    from fercore.models import summary

    loaded = loaders.model(checkpoint)
    with loaders.model_lock(loaded):  # summary hooks into the shared model's modules for one forward pass
        return summary(loaded.model)


def model_summary(checkpoint: str):
    """fercore.models.summary of the checkpoint's model, once per server."""
    return _model_summary(loaders.model(checkpoint).key, checkpoint)


@st.cache_data(show_spinner=False, max_entries=32)
def _split_accuracies(model_key: str, data_key: str, tta: bool, _checkpoint: str, _data: sources.DataChoice):
    from fercore.evaluation import split_accuracies as accuracies

    def split_evaluation(split: str):
        return evaluation(Scope(_checkpoint, model_key, _data, split), tta)

    return accuracies(loaders.model(_checkpoint), loaders.dataset(_data), tta, evaluate=split_evaluation)


def split_accuracies(checkpoint: str, data: sources.DataChoice, tta: bool = False) -> list[dict]:
    """fercore.evaluation.split_accuracies on every split of the data, each split through `evaluation` (the
    Confusion page's cached result), so a split is evaluated once per server whichever page asks first."""
    return _split_accuracies(loaders.model(checkpoint).key, data.key, bool(tta), checkpoint, data)


# -------------------------------------------------------------------------------------------------- report

@st.cache_resource(show_spinner=False, max_entries=8)
def _report_html(key: tuple, _s: Scope, image_index: int) -> str:
    from fercore.report import build_report

    def split_evaluation(split: str | None):  # the Confusion page's cached result: each split evaluated once
        return evaluation(Scope(_s.checkpoint, _s.model_key, _s.data, split or "all"))

    loaded = _loaded(_s)
    # A private copy: the report hooks into the model for seconds (saliency, gradient ascent, layer outputs), and
    # other sessions' clicks on the shared model must not wait for it or see its hooks.
    with loaders.model_lock(loaded):
        loaded = copy.deepcopy(loaded)
    use_app_threads()
    with computing(f"report on {_s.split}, face {image_index}"):
        return build_report(loaded, loaders.dataset(_s.data), split=None if _s.split == "all" else _s.split,
                            image=image_index, evaluate=split_evaluation)


def report_html(s: Scope, image_index: int) -> str:
    """fercore.report's page of the homework's five answers for the scope's checkpoint, data and split, with face
    `image_index` of the split (keys.IMAGE) in questions 4 and 5: one self-contained HTML string, built once per
    server (ValueError for an unlabeled data set or a face outside the split)."""
    return _report_html((*s.key, s.checkpoint), s, int(image_index))


# ----------------------------------------------------------------------------------------------------- occlusion

@st.cache_data(show_spinner=False, max_entries=128)
def _occlusion(key: tuple, _s: Scope, index: int, target: Target, patch: int, stride: int) -> np.ndarray:
    from fercore.occlusion import occlusion_map

    loaded, data = _loaded(_s), _images(_s)
    if not 0 <= index < len(data):
        raise ValueError(f"image {index} is not in this split ({len(data)} images)")
    label = None if data.labels is None else int(data.labels[index])
    use_app_threads()  # one face, but ~120 occluded copies of it in one batch
    with loaders.model_lock(loaded):
        return occlusion_map(loaded.model, loaded.preprocess(data.pixels[index:index + 1]), target.with_labels(label),
                             patch=patch, stride=stride)[0]


def occlusion(s: Scope, index: int, target: Target, patch: int, stride: int) -> np.ndarray:
    """fercore.occlusion.occlusion_map of image `index` of the split: (48, 48) drops of the target's probability."""
    return _occlusion((*s.key, s.checkpoint), s, int(index), target, int(patch), int(stride))


@st.cache_data(show_spinner=False, max_entries=256)
def _covered(key: tuple, _s: Scope, index: int, region) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from fercore.occlusion import cover, covered_prediction

    loaded, data = _loaded(_s), _images(_s)
    if not 0 <= index < len(data):
        raise ValueError(f"image {index} is not in this split ({len(data)} images)")
    face = data.pixels[index]
    use_app_threads(batch=False)
    with loaders.model_lock(loaded):
        before, after = covered_prediction(loaded, face, region)
    return cover(face, region), before, after


def covered(s: Scope, index: int, region) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the face with `region` covered, probabilities before, after): fercore.occlusion.covered_prediction."""
    return _covered((*s.key, s.checkpoint), s, int(index), region if isinstance(region, str) else tuple(region))


# ------------------------------------------------------------------------------------------ FER+ against FER2013

@st.cache_resource(show_spinner=False, max_entries=16)
def _label_audit(key: tuple, _s: Scope, tta: bool):
    from fercore.ferplus import audit_labels

    return audit_labels(evaluation(_s, tta), _images(_s))


def label_audit(s: Scope, tta: bool = False):
    """fercore.ferplus.audit_labels of the Confusion page's evaluation (so the split is evaluated once)."""
    return _label_audit(s.key, s, bool(tta))


@st.cache_resource(show_spinner=False, max_entries=16)
def _label_figures(key: tuple, _s: Scope, tta: bool) -> dict:
    from fercore import render

    audit = label_audit(_s, tta)
    return {"pairs": render.labelled_confusion_figure(audit.pair_counts, "FER2013 label", "FER+ majority"),
            "fer2013": render.labelled_confusion_figure(audit.fer2013_confusion, "FER2013 label", "predicted",
                                                        title="Against FER2013's labels"),
            "ferplus": render.labelled_confusion_figure(audit.ferplus_confusion, "FER+ majority", "predicted",
                                                        title="Against the FER+ majority")}


def label_figures(s: Scope, tta: bool = False) -> dict:
    """The Labels page's three grids (label pairs, the model against each labelling), built once per server."""
    return _label_figures(s.key, s, bool(tta))
