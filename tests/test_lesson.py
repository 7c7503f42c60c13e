"""A lesson precomputed before class (fercore.lesson, `python -m fercore precompute`): a real tiny checkpoint and
its epoch snapshot, every part computed once into the disk cache, a second run that computes nothing, and the
app answering its clicks from that cache with every heavy computation made to fail."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fercore import cli, disk_cache, lesson
from fercore.data import load_dataset
from fercore.evaluation import MEAN_SALIENCY_LIMIT, cell_means_meta, evaluate_checkpoint
from fercore.filters import render as ascent
from fercore.checkpoints import load_model
from fercore.labels import PRIVATE_TEST, TRAINING
from fercore.models import conv_layers

from fixtures import ROOT, learnable_faces, train_on_faces
from ui import keys, nav

pytestmark = pytest.mark.usefixtures("one_thread")

# What computes a lesson's parts: each made to fail once the lesson is precomputed.
HEAVY = [("fercore.evaluation.predict_probabilities", "an evaluation"),
         ("fercore.evaluation.cell_mean_saliency", "a cell's mean saliency"),
         ("fercore.saliency.explain_faces", "a face's saliency"),
         ("fercore.filters.render.visualize_filters", "a filter grid"),
         ("fercore.filters.exemplars.top_activating_layer", "a layer's top faces")]


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """A checkpoint trained for real on a small data file (Training and PrivateTest rows), and a lesson precomputed
    for it into a cache folder of its own. Gradient ascent runs 10 steps (the Steps slider's least) instead of the
    page's 100 (for the lesson and the app alike: the defaults are the layer's settings), to keep the module short."""
    root = tmp_path_factory.mktemp("lesson")
    pixels, labels = learnable_faces(120, seed=3)
    usage = np.array([TRAINING] * 50 + [PRIVATE_TEST] * 70, dtype=np.uint8)
    checkpoint = root / "checkpoints" / "tiny"
    data = train_on_faces(root, pixels, labels, usage, checkpoint)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("SMALL_FIELD", "LARGE_FIELD"):
            patch.setattr(ascent, name, dataclasses.replace(getattr(ascent, name), steps=10))
        patch.setenv("FERCORE_CACHE_DIR", str(root / "cache"))
        done = []
        summary = lesson.precompute([checkpoint], data, on_progress=lambda i, total, what: done.append((i, total)))
        yield {"root": root, "checkpoint": checkpoint, "data": data, "cache": root / "cache", "summary": summary,
               "progress": done}


@pytest.fixture
def precomputed(classroom, monkeypatch):
    """The lesson's cache folder, gradient ascent as short as the lesson's, and every heavy computation failing."""
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(classroom["cache"]))
    for name in ("SMALL_FIELD", "LARGE_FIELD"):
        monkeypatch.setattr(ascent, name, dataclasses.replace(getattr(ascent, name), steps=10))
    for target, what in HEAVY:
        def refuse(*args, what=what, **kwargs):
            raise AssertionError(f"{what} was computed, but the lesson has it")
        monkeypatch.setattr(target, refuse)
    return classroom


def entries(cache) -> dict:
    return {path: path.stat().st_mtime_ns for path in cache.rglob("*.npz")}


def test_precompute_stores_every_part_once(classroom):
    summary, checkpoint = classroom["summary"], classroom["checkpoint"]
    layers = len(conv_layers(load_model(checkpoint).model))
    dataset = load_dataset(classroom["data"])
    splits = [name for name in lesson.LESSON_SPLITS if len(dataset.select_split(name))]
    assert "PrivateTest" in splits
    # Per test split: 2 evaluations, 2 x 49 cells, first views, a grid and top faces per layer.
    assert summary.parts == len(splits) * (2 + 2 * 49 + 1 + 2 * layers)
    assert 0 < summary.computed < summary.parts  # empty cells have nothing to store
    assert classroom["progress"][0] == (0, summary.parts) and classroom["progress"][-1][0] == summary.parts
    kinds = {path.parent.name for path in entries(classroom["cache"])}
    assert kinds == {"evaluation", "cell-means", "first-views", "filters", "top-activating", "lesson"}
    assert len(list((classroom["cache"] / "filters").glob("*.npz"))) == layers


def test_with_snapshots_the_lesson_takes_each_epoch_the_app_replays(classroom):
    """--snapshots adds the run's epoch snapshots, keyed as the sidebar's Epoch slider loads them."""
    from fercore.snapshots import model_at_epoch

    models = list(lesson.lesson_models(classroom["checkpoint"], snapshots=True))
    assert [label for label, _ in models] == [str(classroom["checkpoint"]), f"{classroom['checkpoint']} epoch 1"]
    assert models[1][1].key == model_at_epoch(classroom["checkpoint"], 1).key != models[0][1].key
    assert [label for label, _ in lesson.lesson_models(classroom["checkpoint"])] == [str(classroom["checkpoint"])]


def test_a_second_run_computes_nothing_and_says_so(precomputed, capsys):
    before = entries(precomputed["cache"])
    started = time.perf_counter()
    code = cli.main(["precompute", str(precomputed["checkpoint"]), "--data", str(precomputed["data"]), "--quiet"])
    seconds = time.perf_counter() - started
    assert code == 0
    assert f"all {precomputed['summary'].parts} parts already cached" in capsys.readouterr().out
    assert entries(precomputed["cache"]) == before  # nothing rewritten
    assert seconds < 10  # the data file read and the checkpoint loaded, then only the manifest's files checked


def test_a_lost_entry_is_computed_again_and_only_it(classroom, monkeypatch):
    """The manifest of a model's lesson speeds up a second run, but never hides an entry gone from the disk."""
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(classroom["cache"]))
    for name in ("SMALL_FIELD", "LARGE_FIELD"):
        monkeypatch.setattr(ascent, name, dataclasses.replace(getattr(ascent, name), steps=10))
    lost = sorted((classroom["cache"] / "cell-means").glob("*.npz"))[0]
    lost.unlink()
    summary = lesson.precompute([classroom["checkpoint"]], classroom["data"])
    assert (summary.parts, summary.computed) == (classroom["summary"].parts, 1) and lost.is_file()


def test_the_cached_results_are_what_the_functions_compute(classroom, monkeypatch):
    """The stored cell means are the live computation's (same cell, same evaluation)."""
    from fercore.evaluation import cell_means

    loaded = load_model(classroom["checkpoint"])
    data = load_dataset(classroom["data"]).select_split("PrivateTest")
    result = evaluate_checkpoint(loaded, data, cache_dir=classroom["cache"])
    assert result.from_cache
    true, pred = (int(v) for v in np.unravel_index(result.confusion.argmax(), result.confusion.shape))
    stored = disk_cache.read(cell_means_meta(result, true, pred, MEAN_SALIENCY_LIMIT), classroom["cache"])
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(classroom["root"] / "elsewhere"))  # computes afresh
    face, saliency = cell_means(result, loaded.model, loaded.normalizer, data, true, pred)
    np.testing.assert_array_equal(stored["face"], face)
    np.testing.assert_allclose(stored["saliency"], saliency, rtol=1e-5, atol=1e-8)


def test_the_app_answers_every_click_from_the_lesson(precomputed, monkeypatch):
    """A fresh server (the process-wide caches cleared) on the lesson's cache: the Confusion page, a cell, its
    means, a face's quick look, the Inspect page and the Filters page's grid and top faces, with every heavy
    computation failing."""
    monkeypatch.setenv("FERCORE_CHECKPOINTS", str(precomputed["checkpoint"].parent))
    monkeypatch.setenv("FERCORE_RUNS", str(precomputed["root"] / "runs"))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    for key, value in {keys.DATA_MODE: "path", keys.DATA_PATH: str(precomputed["data"]), keys.SPLIT: "PrivateTest",
                       keys.CHECKPOINT: str(precomputed["checkpoint"])}.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception

    loaded = load_model(precomputed["checkpoint"])
    result = evaluate_checkpoint(loaded, load_dataset(precomputed["data"]).select_split("PrivateTest"))
    true, pred = (int(v) for v in np.unravel_index(result.confusion.argmax(), result.confusion.shape))
    at.session_state[keys.CELL] = (true, pred)
    at.run()
    assert not at.exception, at.exception
    assert any("mean saliency" in c for image in at.image for c in image.captions)

    inspect = next(b for b in at.button if b.key and b.key.startswith("w_pick_"))
    inspect.click().run()  # the quick look: the face's first view
    assert not at.exception, at.exception
    assert {"Heatmap", "Mask"} <= {c for image in at.image for c in image.captions}
    at.switch_page(nav.INSPECT).run()
    assert not at.exception, at.exception
    assert {"Heatmap", "Mask"} <= {c for image in at.image for c in image.captions}

    at.switch_page(nav.FILTERS).run()
    assert not at.exception, at.exception
    assert "w_fa_render" not in {b.key for b in at.button}  # the grid is there without a Render click
    assert any(c.startswith("all ") and "filters of" in c for image in at.image for c in image.captions)
    assert any("Faces that excite filter" in s.value for s in at.subheader)


def test_a_layers_top_faces_in_one_pass_are_each_filters_own(classroom):
    """top_activating_layer (what the lesson stores) gives every filter what top_activating gives it alone."""
    from fercore.filters import top_activating, top_activating_layer

    loaded = load_model(classroom["checkpoint"])
    images = loaded.preprocess(load_dataset(classroom["data"]).select_split("PrivateTest").pixels)
    whole = top_activating_layer(loaded.model, images, "conv3", k=5)
    assert len(whole) == conv_layers(loaded.model)["conv3"].out_channels
    for f in (0, 7, len(whole) - 1):
        alone = top_activating(loaded.model, images, "conv3", f, k=5)
        np.testing.assert_array_equal(whole[f].indices, alone.indices)
        np.testing.assert_allclose(whole[f].scores, alone.scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(whole[f].regions, alone.regions)
