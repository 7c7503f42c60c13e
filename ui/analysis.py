"""The app's calls into fercore's analysis, cached and shared across sessions.

Each function is cached directly on its arguments: the sidebar's Selection (which carries its files' stamps, so a
replaced checkpoint or data file is a new key), names and numbers, and a fercore.saliency.Target (hashable by
value). A result of the model alone hashes the selection by its checkpoint only (Selection.model_identity), so
changing the data or the split keeps it. Each function sets the torch thread count for the moment and holds the
model's lock while it hooks into the shared model (ui.compute says who serialises what).

A cached function's arguments have no defaults: Streamlit keys on the arguments as passed, so a default left out
in one call and given in another would compute the same result twice.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from fercore import disk_cache
from ui import loaders
from ui.compute import computing, model_lock, shared_results, use_app_threads
from ui.sidebar import Selection

if TYPE_CHECKING:  # fercore.saliency imports torch, which the first paint must not wait for
    from fercore.saliency import Target

BY_MODEL = {Selection: Selection.model_identity}  # hash_funcs of the results that depend on the model alone


def _loaded(selection: Selection):
    return loaders.model(selection.checkpoint, selection.epoch)


def _images(selection: Selection):
    return loaders.split_dataset(selection)


def _face_index(data, index: int) -> int:
    if not 0 <= index < len(data):
        raise ValueError(f"image {index} is not in this split ({len(data)} images)")
    return index


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


def face_analysis(loaded, pixels: np.ndarray, method: str, target: Target,
                  options: dict) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (7,), saliency (48, 48)) of any uint8 face (48, 48), from a data set or an upload:
    fercore.saliency.explain_faces on the shared model, under its lock, with the app's threads."""
    from fercore.saliency import explain_faces

    use_app_threads(batch=method in ("smoothgrad", "integrated_gradients"))  # tens of noisy copies or path points
    with model_lock(loaded):
        probabilities, saliency = explain_faces(loaded, pixels, method, target, **options)
    return probabilities[0], saliency[0]


@st.cache_resource(show_spinner=False, max_entries=8)
def _first_views(selection: Selection) -> tuple[np.ndarray, np.ndarray]:
    """fercore.saliency.first_views of the split when a precomputed lesson left them on disk; LookupError when
    not (not cached, so a lesson precomputed while the server runs is found at the next click)."""
    from fercore.saliency import first_views_meta

    loaded, data = _loaded(selection), _images(selection)
    arrays = disk_cache.read(first_views_meta(loaded.key, data.fingerprint()))
    if arrays is None or arrays["saliency"].shape != (len(data), 48, 48):
        raise LookupError("no precomputed first views")
    return arrays["probabilities"], arrays["saliency"]


def _is_first_view(method: str, target: Target, options: dict) -> bool:
    from fercore.saliency import DEFAULT_METHOD, Target

    return method == DEFAULT_METHOD and target == Target.predicted() and not options


@st.cache_data(show_spinner=False, max_entries=256)
def image_analysis(selection: Selection, index: int, method: str, target: Target, options: dict) -> ImageAnalysis:
    """One image's saliency map (fercore.saliency), class probabilities and FER+ votes; a face's first view
    (the vanilla gradient of the predicted class) is read from a precomputed lesson when there is one."""
    data = _images(selection)
    index = _face_index(data, index)
    label = None if data.labels is None else int(data.labels[index])
    try:
        if not _is_first_view(method, target, options):
            raise LookupError(method)
        all_probabilities, all_saliency = _first_views(selection)
        probabilities, saliency = all_probabilities[index], all_saliency[index]
    except LookupError:
        probabilities, saliency = face_analysis(_loaded(selection), data.pixels[index], method,
                                                target.with_labels(label), options)
    votes = None if data.ferplus_votes is None else data.ferplus_votes[index]
    return ImageAnalysis(data.pixels[index], saliency, probabilities, label, votes, str(data.ids[index]))


@st.cache_resource(show_spinner=False, max_entries=16, hash_funcs=BY_MODEL)
def gradcam_layers(selection: Selection) -> tuple[dict[str, tuple[int, int]], str]:
    """The model's conv layers with their map sizes (H, W), input to output, and Grad-CAM's default among them."""
    from fercore.saliency import conv_map_sizes, default_gradcam_layer

    loaded = _loaded(selection)
    with model_lock(loaded):
        return conv_map_sizes(loaded.model), default_gradcam_layer(loaded.model)


# ------------------------------------------------------------------------------------------------- filters

@st.cache_resource(show_spinner=False, max_entries=8)
def input_range(selection: Selection) -> tuple[float, float]:
    """The model's input value range on the split's faces (LoadedModel.input_range, as fercore.report has it):
    gradient ascent keeps its pixels inside it."""
    return _loaded(selection).input_range(_images(selection).pixels)


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=BY_MODEL)
def ascent_defaults(selection: Selection, layer: str) -> dict:
    """fercore.filters.default_settings: what visualize_filters does for this layer when told nothing."""
    from fercore.filters import default_settings

    loaded = _loaded(selection)
    with model_lock(loaded):
        return default_settings(loaded.model, layer)


@st.cache_data(show_spinner=False, max_entries=16, hash_funcs=BY_MODEL)
def layer_kernels(selection: Selection, layer: str) -> np.ndarray | None:
    """fercore.filters.layer_kernels for a layer that reads the image, None for a deeper one (its kernels weigh
    feature maps, not pixels)."""
    from fercore.filters import find_layer, layer_kernels as kernels

    loaded = _loaded(selection)
    with model_lock(loaded):
        return kernels(loaded.model, layer) if find_layer(loaded.model, layer).kernels_are_pictures else None


def filter_key(selection: Selection, layer: str, filters: tuple | None, params: dict) -> tuple:
    """The shared result's key: the model and the settings, not the data (a filter's image is the model's)."""
    return ("filters", *selection.model_identity(), layer, filters, tuple(sorted(params.items())))


def _every_setting(selection: Selection, layer: str, params: dict) -> dict:
    """The page's settings completed by the layer's defaults (the ones it has no widget for), so fercore need not
    measure the layer's receptive field again to key the result."""
    return {**ascent_defaults(selection, layer), **params}


def _filters_meta(selection: Selection, layer: str, filters: tuple | None, params: dict) -> dict:
    from fercore.filters import filters_meta

    loaded = _loaded(selection)
    with model_lock(loaded):
        return filters_meta(loaded.model, layer, filters, model_key=loaded.key, value_range=input_range(selection),
                            **_every_setting(selection, layer, params))


def cached_filters(selection: Selection, layer: str, filters: tuple | None, params: dict):
    """The gradient-ascent result if some session, another server or a precomputed lesson computed it already
    (this server's memory, then the disk cache), else None (never computes)."""
    from fercore.filters import stored_filters

    key = filter_key(selection, layer, filters, params)
    found = shared_results().peek(key)
    if found is None:
        found = stored_filters(_filters_meta(selection, layer, filters, params))
        if found is not None:
            shared_results().get(key, lambda report: found)
    return found


def visualize_filters(selection: Selection, layer: str, filters: tuple | None, params: dict, on_progress=None):
    """fercore.filters.cached_visualize_filters, computed once per cache folder for these settings (other
    sessions asking meanwhile follow the same progress; another server waits on the disk entry's lock). Runs on a
    private copy of the model: it hooks into modules for seconds, and saliency clicks on the shared model must not
    wait for it or see its hooks."""
    from fercore.filters import cached_visualize_filters as ascend

    def compute(report):
        loaded = _loaded(selection)
        with model_lock(loaded):
            model = copy.deepcopy(loaded.model)
        use_app_threads()
        steps = params["steps"]
        report(0.0, f"0 / {steps} steps")
        with computing(f"filters of {layer} ({len(filters) if filters else 'all'}, {steps} steps)",
                       selection.model_name()):
            return ascend(model, layer, list(filters) if filters else None, model_key=loaded.key,
                          value_range=input_range(selection),
                          progress=lambda step, total: report(step / total, f"{step} / {total} steps"),
                          **_every_setting(selection, layer, params))

    return shared_results().get(filter_key(selection, layer, filters, params), compute, on_progress)


@st.cache_data(show_spinner=False, max_entries=64)
def layer_outputs(selection: Selection, layer: str, index: int) -> np.ndarray:
    """float32 (C, H, W): every channel of `layer` for image `index` of the split."""
    from fercore.filters import layer_outputs as outputs

    loaded, data = _loaded(selection), _images(selection)
    use_app_threads(batch=False)
    with model_lock(loaded):
        return outputs(loaded.model, loaded.preprocess(data.pixels[index:index + 1]), layer)[0]


@st.cache_resource(show_spinner=False, max_entries=32)
def top_activating(selection: Selection, layer: str, filter_index: int, k: int):
    """fercore.filters.cached_top_activating over the whole split (on disk for the whole layer, per server in
    memory)."""
    from fercore.filters import cached_top_activating as top

    loaded, data = _loaded(selection), _images(selection)
    use_app_threads()
    with model_lock(loaded), computing(f"top activating images of {layer} filter {filter_index}",
                                       selection.model_name()):
        return top(loaded.model, loaded.preprocess(data.pixels), layer, filter_index, k, model_key=loaded.key,
                   data_fingerprint=data.fingerprint())


# ---------------------------------------------------------------------------------------------- evaluation

@st.cache_resource(show_spinner=False, max_entries=16)
def evaluation(selection: Selection, tta: bool):
    """fercore.evaluation's Evaluation of the checkpoint on the split (with flip TTA or not): once per server,
    and cached on disk by fercore, so reopening the app is instant."""
    from fercore.evaluation import evaluate_checkpoint

    loaded = _loaded(selection)
    use_app_threads()
    # evaluate copies the model (hooks included): hold the lock so no saliency hook of another session comes along.
    with model_lock(loaded), computing(f"evaluation on {selection.split} (tta {tta})", selection.model_name()):
        # The split's own rows are the dataset here, so cell indices are positions in the split, as keys.IMAGE is.
        return evaluate_checkpoint(loaded, _images(selection), tta=tta)


def metrics_table(result) -> dict:
    """Per-class precision / recall / F1 / support as columns for st.dataframe."""
    rows = result.per_class()
    return {"class": [r["cls"] for r in rows], "precision": [round(r["precision"], 3) for r in rows],
            "recall": [round(r["recall"], 3) for r in rows], "F1": [round(r["f1"], 3) for r in rows],
            "images": [r["support"] for r in rows]}


def cell_images(selection: Selection, true: int, pred: int, tta: bool = False):
    """The cell's CellImages (split positions and probabilities), most confident first."""
    return evaluation(selection, tta).cell(true, pred)


@st.cache_resource(show_spinner=False, max_entries=64)
def cell_means(selection: Selection, true: int, pred: int, tta: bool):
    """fercore.evaluation.cell_means (mean face float32 0..255, mean vanilla-gradient saliency of its most
    confident images) of the cell, or (None, None) when it is empty: read from the disk cache when a lesson or
    another server computed it."""
    from fercore import disk_cache as cache
    from fercore.evaluation import MEAN_SALIENCY_LIMIT, cell_means as means, cell_means_meta

    loaded, data, result = _loaded(selection), _images(selection), evaluation(selection, tta)
    cached = cache.is_cached(cell_means_meta(result, true, pred, MEAN_SALIENCY_LIMIT))
    use_app_threads()
    with model_lock(loaded), computing(f"mean face and saliency of cell ({true}, {pred})"
                                       + (" (read from the disk cache)" if cached else ""), selection.model_name()):
        return means(result, loaded.model, loaded.normalizer, data, true, pred)


@st.cache_resource(show_spinner=False, max_entries=16)
def confusion_figure(selection: Selection, tta: bool, normalized: bool):
    """fercore.render's clickable confusion grid for this evaluation, built once (every click reruns the page)."""
    from fercore import render

    return render.confusion_figure(evaluation(selection, tta).confusion, normalized=normalized)


# ------------------------------------------------------------------------------------------- model and runs

@st.cache_resource(show_spinner=False, max_entries=16, hash_funcs=BY_MODEL)
def model_summary(selection: Selection):
    """fercore.models.summary of the checkpoint's model, once per server."""
    from fercore.models import summary

    loaded = _loaded(selection)
    with model_lock(loaded):  # summary hooks into the shared model's modules for one forward pass
        return summary(loaded.model)


@st.cache_data(show_spinner=False, max_entries=32, hash_funcs={Selection: lambda s: (s.model_identity(), s.data)})
def split_accuracies(selection: Selection, tta: bool) -> list[dict]:
    """fercore.evaluation.split_accuracies on every split of the selection's data (its split aside), each split
    through `evaluation` (the Confusion page's cached result), so a split is evaluated once per server whichever
    page asks first."""
    from fercore.evaluation import split_accuracies as accuracies

    def split_evaluation(split: str):
        return evaluation(replace(selection, split=split), tta)

    return accuracies(_loaded(selection), loaders.dataset(selection.data), tta, evaluate=split_evaluation)


# -------------------------------------------------------------------------------------------------- report

@st.cache_resource(show_spinner=False, max_entries=8)
def report_html(selection: Selection, image_index: int) -> str:
    """fercore.report's page of the homework's five answers for the selection's checkpoint, data and split, with
    face `image_index` of the split (keys.IMAGE) in questions 4 and 5: one self-contained HTML string, built once
    per server (ValueError for an unlabeled data set or a face outside the split)."""
    from fercore.report import build_report

    def split_evaluation(split: str | None):  # the Confusion page's cached result: each split evaluated once
        return evaluation(replace(selection, split=split or "all"), False)

    loaded = _loaded(selection)
    # A private copy: the report hooks into the model for seconds (saliency, gradient ascent, layer outputs), and
    # other sessions' clicks on the shared model must not wait for it or see its hooks.
    with model_lock(loaded):
        loaded = copy.deepcopy(loaded)
    use_app_threads()
    with computing(f"report on {selection.split}, face {image_index}", selection.model_name()):
        return build_report(loaded, loaders.dataset(selection.data),
                            split=None if selection.split == "all" else selection.split, image=image_index,
                            evaluate=split_evaluation)


# ----------------------------------------------------------------------------------------------------- occlusion

@st.cache_data(show_spinner=False, max_entries=128)
def occlusion(selection: Selection, index: int, target: Target, patch: int, stride: int) -> np.ndarray:
    """fercore.occlusion.occlusion_map of image `index` of the split: (48, 48) drops of the target's probability."""
    from fercore.occlusion import occlusion_map

    loaded, data = _loaded(selection), _images(selection)
    index = _face_index(data, index)
    label = None if data.labels is None else int(data.labels[index])
    use_app_threads()  # one face, but ~120 occluded copies of it in one batch
    with model_lock(loaded):
        return occlusion_map(loaded.model, loaded.preprocess(data.pixels[index:index + 1]), target.with_labels(label),
                             patch=patch, stride=stride)[0]


@st.cache_data(show_spinner=False, max_entries=256)
def covered(selection: Selection, index: int, region) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the face with `region` covered, probabilities before, after): fercore.occlusion.covered_prediction."""
    from fercore.occlusion import cover, covered_prediction

    loaded, data = _loaded(selection), _images(selection)
    face = data.pixels[_face_index(data, index)]
    use_app_threads(batch=False)
    with model_lock(loaded):
        before, after = covered_prediction(loaded, face, region)
    return cover(face, region), before, after


# ------------------------------------------------------------------------------------------ FER+ against FER2013

@st.cache_resource(show_spinner=False, max_entries=16)
def label_audit(selection: Selection, tta: bool):
    """fercore.ferplus.audit_labels of the Confusion page's evaluation (so the split is evaluated once)."""
    from fercore.ferplus import audit_labels

    return audit_labels(evaluation(selection, tta), _images(selection))


@st.cache_resource(show_spinner=False, max_entries=16)
def label_figures(selection: Selection, tta: bool) -> dict:
    """The Labels page's three grids (label pairs, the model against each labelling), built once per server."""
    from fercore import render

    audit = label_audit(selection, tta)
    return {"pairs": render.labelled_confusion_figure(audit.pair_counts, "FER2013 label", "FER+ majority"),
            "fer2013": render.labelled_confusion_figure(audit.fer2013_confusion, "FER2013 label", "predicted",
                                                        title="Against FER2013's labels"),
            "ferplus": render.labelled_confusion_figure(audit.ferplus_confusion, "FER+ majority", "predicted",
                                                        title="Against the FER+ majority")}
