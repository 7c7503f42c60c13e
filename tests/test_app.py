"""The dashboard, page by page, through streamlit.testing's AppTest: a real (small, really trained) checkpoint,
real data files, selections driven through the app's session_state keys (ui/keys.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from fercore import jobs
from fercore.data import load_dataset
from fercore.labels import CLASS_NAMES, PRIVATE_TEST, PUBLIC_TEST

from fixtures import learnable_faces, tiny_fer_csv, train_on_faces, wait_until, write_course_test_csv
from fercore.training import TrainConfig
from ui import compute, keys, nav, train_form
from ui.settings import JOB_THREADS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = str(ROOT / "dashboard.py")
TIMEOUT = 60


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """A data file with PublicTest/PrivateTest rows and FER+ votes, and a checkpoint trained on it for real."""
    root = tmp_path_factory.mktemp("classroom")
    pixels, labels = learnable_faces(204, seed=1)  # 64 to train on (a checkpoint, not a good one), 140 to look at
    usage = np.array([PUBLIC_TEST] * 64 + [PRIVATE_TEST] * 140, dtype=np.uint8)
    votes = np.random.default_rng(0).integers(0, 4, size=(204, 10)).astype(np.uint8)
    checkpoints = root / "checkpoints"
    data_path = train_on_faces(root, pixels, labels, usage, checkpoints / "tiny", votes=votes)
    (root / "runs").mkdir()
    return {"data": data_path, "checkpoints": checkpoints, "checkpoint": checkpoints / "tiny", "runs": root / "runs",
            "root": root}


@pytest.fixture
def env(classroom, monkeypatch):
    monkeypatch.setenv("FERCORE_CHECKPOINTS", str(classroom["checkpoints"]))
    monkeypatch.setenv("FERCORE_RUNS", str(classroom["runs"]))
    return classroom


def open_app(page: str | None = None, **state) -> AppTest:
    """The app after its first run (and a switch to `page`), with session_state preset by key."""
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def on_data(classroom, **state) -> dict:
    return {keys.DATA_MODE: "path", keys.DATA_PATH: str(classroom["data"]), keys.SPLIT: "PrivateTest",
            keys.CHECKPOINT: str(classroom["checkpoint"]), **state}


def texts(at: AppTest) -> str:
    """Every piece of text on the page, for 'does the page say X' checks."""
    parts = [e.value for kind in ("markdown", "caption", "subheader", "title", "info", "warning", "error", "success")
             for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def predictions(classroom) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute force: the checkpoint's probabilities and the labels on the PrivateTest rows."""
    from fercore.checkpoints import load_model

    loaded = load_model(classroom["checkpoint"])
    data = load_dataset(classroom["data"]).select_split("PrivateTest")
    with torch.inference_mode():
        probs = torch.softmax(loaded.model(loaded.preprocess(data.pixels)), 1).numpy()
    return probs, probs.argmax(1), data.labels


# ------------------------------------------------------------------------------------------------ no checkpoint

def test_without_any_checkpoint_the_app_says_how_to_get_one_and_train_works(tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CHECKPOINTS", str(tmp_path / "none"))
    monkeypatch.setenv("FERCORE_RUNS", str(tmp_path / "runs"))
    at = open_app()
    assert at.title[0].value == "Confusion"
    assert "python -m fercore train" in texts(at)
    for page in (nav.INSPECT, nav.FILTERS):
        at.switch_page(page).run()
        assert not at.exception and "python -m fercore train" in texts(at)
    at.switch_page(nav.TRAIN).run()
    assert not at.exception
    assert at.title[0].value == "Train"
    assert at.button(key="FormSubmitter:new_run-Start training") is not None


# ----------------------------------------------------------------------------------------------------- confusion

def test_confusion_page_shows_the_matrix_metrics_and_a_cells_gallery(env):
    probs, pred, labels = predictions(env)
    at = open_app(**on_data(env))
    assert at.title[0].value == "Confusion"
    accuracy = (pred == labels).mean()
    assert f"accuracy **{accuracy:.1%}**" in texts(at)
    table = at.dataframe[0].value
    assert list(table["class"]) == list(CLASS_NAMES)
    assert list(table["images"]) == np.bincount(labels, minlength=7).tolist()
    assert len(at.get("plotly_chart")) == 1

    # The largest off-diagonal cell (or the largest cell when the model is perfect), chosen as a click would.
    counts = np.zeros((7, 7), int)
    np.add.at(counts, (labels, pred), 1)
    off = counts - np.diag(np.diag(counts))
    true, guess = np.unravel_index((off if off.any() else counts).argmax(), counts.shape)
    if off.any():  # question 3 in one sentence: "Fear is most often taken for Sad: 123 of 528 Fear images (23%)."
        assert f"{CLASS_NAMES[true]} is most often taken for {CLASS_NAMES[guess]}: {off.max()} of " in texts(at)
    at.session_state[keys.CELL] = (int(true), int(guess))
    at.run()
    assert not at.exception
    n = counts[true, guess]
    assert f"True {CLASS_NAMES[true]}, predicted {CLASS_NAMES[guess]}: {n} image" in texts(at)
    members = np.flatnonzero((labels == true) & (pred == guess))
    ranked = members[np.argsort(-probs[members, guess], kind="stable")]
    buttons = [b for b in at.button if b.key and b.key.startswith("w_pick_")]
    assert [int(b.key.removeprefix("w_pick_")) for b in buttons] == ranked[:24].tolist()
    assert any("mean saliency" in c for image in at.image for c in image.captions)
    downloads = {d.proto.label for d in at.get("download_button")}
    assert {"Matrix (CSV)", "Per class (CSV)", f"These faces (PNG, the {min(n, 120)} most confident)"} <= downloads

    buttons[0].click().run()  # Inspect under the most confident face: selects it, shows its saliency at once
    assert not at.exception
    assert at.session_state[keys.IMAGE] == ranked[0]
    assert {"Heatmap", "Mask"} <= {c for image in at.image for c in image.captions}
    assert f"Face {ranked[0]} of PrivateTest" in texts(at)
    at.switch_page(nav.INSPECT).run()  # the dialog's link: the Inspect page shows that face
    assert at.title[0].value == "Inspect" and at.session_state["w_inspect_index"] == ranked[0]


def test_the_epoch_slider_replays_training(env, tmp_path, monkeypatch):
    """A run's snapshots make an Epoch slider in the sidebar: the matrix and a face's saliency are the model's as it
    was after that epoch, and "as saved" is the checkpoint again."""
    from fercore.checkpoints import load_model
    from fercore.saliency import Target, gradient
    from fercore.snapshots import model_at_epoch
    from fercore.training import train
    from ui import analysis
    from ui.sidebar import Selection
    from ui.sources import DataChoice

    run = tmp_path / "checkpoints" / "replay"
    train(TrainConfig(model="fernet", epochs=3, batch_size=32, threads=1, data=str(env["data"])), run)
    monkeypatch.setenv("FERCORE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    data = load_dataset(env["data"]).select_split("PrivateTest")

    def accuracy(loaded) -> str:
        return f"accuracy **{(loaded.predict(data.pixels).argmax(1) == data.labels).mean():.1%}**"

    at = open_app(**on_data(env, **{keys.CHECKPOINT: str(run), keys.EPOCH: 1}))
    assert at.select_slider(key=keys.EPOCH).options == ["1", "2", "3", "as saved"]
    shown = load_model(run).epoch  # best.pt's own record of its epoch
    progress = "replay: 3 of 3 epochs trained" + (f"; shown: epoch {shown}, the best on validation" * (shown != 3))
    assert [c.value for c in at.sidebar.caption if "epochs trained" in c.value] == [progress]
    assert "Replaying epoch 1" in texts(at) and accuracy(model_at_epoch(run, 1)) in texts(at)
    at.session_state[keys.EPOCH] = None
    at.run()
    assert not at.exception and "Replaying" not in texts(at) and accuracy(load_model(run)) in texts(at)

    early = Selection(str(run), DataChoice(str(env["data"]), "faces"), "PrivateTest", epoch=1)
    result = analysis.image_analysis(early, 5, "gradient", Target.predicted(), {})
    loaded = model_at_epoch(run, 1)
    expected = gradient(loaded.model, loaded.preprocess(data.pixels[5:6]), Target.predicted())[0]
    np.testing.assert_allclose(result.saliency, expected, rtol=1e-5, atol=1e-7)


def test_the_sidebar_says_which_epoch_of_a_shipped_run_is_shown():
    """A shipped folder with best.pt alone: the sidebar says how far its run went and, where best.pt is not the
    last epoch, which one the pages show."""
    from fercore.checkpoints import load_model
    from fercore.runs import run_config, run_history
    from ui.sidebar import _training_progress

    folder = ROOT / "checkpoints" / "fernet_wide"
    planned, last, shown = run_config(folder)["epochs"], run_history(folder)[-1]["epoch"], load_model(folder).epoch
    assert _training_progress(str(folder)) == (f"fernet_wide: {last} of {planned} epochs trained"
                                               + f"; shown: epoch {shown}, the best on validation" * (shown != last))
    assert _training_progress(str(ROOT / "checkpoints" / "hw3")).startswith("hw3: ")
    assert "shown" not in _training_progress(str(ROOT / "checkpoints" / "hw3"))  # last.pt: the last epoch


def test_row_normalized_toggle_and_an_empty_cell(env):
    at = open_app(**on_data(env, **{keys.NORMALIZED: True}))
    assert not at.exception and len(at.get("plotly_chart")) == 1
    _, pred, labels = predictions(env)
    counts = np.zeros((7, 7), int)
    np.add.at(counts, (labels, pred), 1)
    empty = np.argwhere(counts == 0)
    if len(empty):
        at.session_state[keys.CELL] = tuple(int(v) for v in empty[0])
        at.run()
        assert not at.exception and "No image falls in this cell" in texts(at)


# ------------------------------------------------------------------------------------------------------- inspect

@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "integrated_gradients", "gradcam"])
def test_inspect_page_draws_heatmap_mask_and_bars_for_every_method(env, method):
    at = open_app(nav.INSPECT, **on_data(env, **{keys.IMAGE: 5, keys.METHOD: method}))
    captions = [c for image in at.image for c in image.captions]
    assert ["Original", "Heatmap", "Mask", "Overlay"] == captions[:4]
    assert at.session_state["w_inspect_index"] == 5
    assert len(at.get("plotly_chart")) == 4  # probabilities, FER+ votes, a covered face's before and after
    assert len(at.get("download_button")) == 1


def test_inspect_targets_and_threshold(env):
    from fercore import render

    at = open_app(nav.INSPECT, **on_data(env, **{keys.IMAGE: 2}))
    for mode in ("true", "class", "contrast"):
        at.selectbox(key=keys.TARGET_MODE).set_value(mode).run()
        assert not at.exception, mode
    at.slider(key=keys.THRESHOLD).set_value(0.9).run()
    assert not at.exception
    assert render.describe_mask(0.9) in texts(at)  # "... at least the face's mean + 4.0 standard deviations ..."


def test_inspect_display_defaults_are_fercores(env):
    """The first view is fercore.render's defaults (scaling, smoothing, threshold mask), and says what the mask keeps;
    every scaling and the top-k mask render."""
    from fercore import render

    at = open_app(nav.INSPECT, **on_data(env, **{keys.IMAGE: 3}))
    assert at.selectbox(key="w_inspect_scaling").value == render.DEFAULT_SCALING
    assert at.slider(key="w_inspect_smoothing").value == render.DEFAULT_SMOOTHING
    assert at.radio(key="w_inspect_mask_mode").value == "threshold"
    assert at.slider(key=keys.THRESHOLD).value == render.DEFAULT_THRESHOLD
    assert "keeps the pixels whose saliency is above the face's mean" in texts(at)
    for scaling in render.SCALINGS:
        at.selectbox(key="w_inspect_scaling").set_value(scaling).run()
        assert not at.exception, scaling
        assert render.describe_mask(scaling=scaling) in texts(at)
    at.radio(key="w_inspect_mask_mode").set_value("top").run()
    assert at.slider(key="w_inspect_keep_top").value == render.DEFAULT_KEEP_TOP
    at.slider(key="w_inspect_keep_top").set_value(0.5).run()
    assert not at.exception and "keeps the 50% most salient pixels" in texts(at)
    at.slider(key="w_inspect_smoothing").set_value(0.0).run()
    assert not at.exception


def test_inspect_gradcam_layer_defaults_to_fercores_choice_and_names_its_resolution(env):
    from fercore.checkpoints import load_model
    from fercore.models import conv_layers
    from fercore.saliency import conv_map_sizes, default_gradcam_layer

    model = load_model(env["checkpoint"]).model
    at = open_app(nav.INSPECT, **on_data(env, **{keys.IMAGE: 1, keys.METHOD: "gradcam"}))
    layer = at.selectbox(key="w_gc_layer")
    assert layer.options == list(conv_layers(model))
    assert layer.value == default_gradcam_layer(model) == "conv5"  # fernet: the last 12x12 map
    assert "conv5's map is 12x12, upsampled to 48x48." in texts(at)
    layer.set_value("conv7").run()
    assert not at.exception and conv_map_sizes(model)["conv7"] == (6, 6)
    assert "conv7's map is 6x6, upsampled to 48x48." in texts(at)


def test_inspect_map_is_fercores_saliency(env):
    """What the page shows is fercore.saliency's map for the selected image and target."""
    from fercore.checkpoints import load_model
    from fercore.saliency import Target, gradient
    from ui import analysis
    from ui.sidebar import Selection
    from ui.sources import DataChoice

    selection = Selection(str(env["checkpoint"]), DataChoice(str(env["data"]), "faces"), "PrivateTest")
    result = analysis.image_analysis(selection, 7, "gradient", Target.cls(3), {})
    loaded = load_model(env["checkpoint"])
    data = load_dataset(env["data"]).select_split("PrivateTest")
    expected = gradient(loaded.model, loaded.preprocess(data.pixels[7:8]), Target.cls(3))[0]
    np.testing.assert_allclose(result.saliency, expected, rtol=1e-5, atol=1e-7)
    assert result.label == data.labels[7]


# ------------------------------------------------------------------------------------------------------- filters

def test_filters_page_renders_a_layer_grid_once_for_every_session(env):
    from fercore.checkpoints import load_model
    from fercore.filters import default_settings

    state = on_data(env, **{keys.IMAGE: 1, "w_fa_steps@conv1": 10})
    at = open_app(nav.FILTERS, **state)
    assert "Outputs of conv1 for image 1" in texts(at)
    assert len(at.columns) > 0 and not at.exception
    # The page starts at fercore's defaults for the layer (only the steps were set here).
    defaults = default_settings(load_model(env["checkpoint"]).model, "conv1")
    assert at.selectbox(key="w_fa_objective@conv1").value == defaults["objective"]
    assert at.selectbox(key="w_fa_param@conv1").value == defaults["param"]
    assert at.slider(key="w_fa_l2_decay@conv1").value == defaults["l2_decay"]
    assert any("Kernels of conv1" in c for image in at.image for c in image.captions)  # before any render
    assert "blue** negative, **white** 0, **red** positive" in texts(at)
    at.button(key="w_fa_render").click().run()
    assert not at.exception
    assert any("all 32 filters of conv1" in c for image in at.image for c in image.captions)
    assert "dead" in texts(at).lower()
    downloads = {d.proto.label for d in at.get("download_button")}
    assert {"Gradient-ascent images (PNG)", "Kernels (PNG)", "Layer outputs (PNG)"} <= downloads

    other = open_app(nav.FILTERS, **state)  # another session: the grid is there without a click
    assert any("all 32 filters of conv1" in c for image in other.image for c in image.captions)

    other.session_state[keys.FILTER_MODE] = "one"
    other.session_state[keys.FILTER_INDEX] = 3
    other.run()
    other.button(key="w_fa_render").click().run()
    assert any(c == "filter 3 of conv1" for image in other.image for c in image.captions)
    assert any(c == "Kernel of conv1, the same order" for image in other.image for c in image.captions)
    assert "Faces that excite filter 3 of conv1 most" in texts(other)

    other.selectbox(key=keys.LAYER).set_value("conv4").run()  # a deeper layer: its own defaults, no kernels
    assert not other.exception
    deep = default_settings(load_model(env["checkpoint"]).model, "conv4")
    assert deep != defaults and other.selectbox(key="w_fa_param@conv4").value == deep["param"]
    assert not any("Kernel" in c for image in other.image for c in image.captions)


# --------------------------------------------------------------------------------------------------------- train

def start_run(at: AppTest, name: str, epochs: int) -> None:
    at.text_input(key="w_train_name").set_value(name)
    at.number_input(key="w_train_epochs").set_value(epochs)
    at.number_input(key="w_train_batch").set_value(32)
    at.selectbox(key="w_train_model").set_value("fernet")
    at.button(key="FormSubmitter:new_run-Start training").click().run()


def test_train_page_starts_refuses_a_second_start_follows_resumes_and_stops(env, tmp_path):
    data = tiny_fer_csv(tmp_path, n_train=140, n_val=35)
    at = open_app(nav.TRAIN, **{keys.DATA_MODE: "path", keys.DATA_PATH: str(data)})
    run_dir = env["runs"] / "class-run"
    try:
        start_run(at, "class-run", 1)
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert jobs.is_running(run_dir)
        assert at.session_state[keys.TRAIN_RUN] == str(run_dir)

        start_run(at, "class-run", 1)  # a second start on the same run (as from another tab)
        assert any("already training" in e.value for e in at.error)

        assert wait_until(lambda: not jobs.is_running(run_dir)), jobs.status(run_dir).log_tail
        at.run()
        assert "1 epoch done" in texts(at) and "best validation accuracy" in texts(at)
        assert "computing in fp32" in texts(at) or "computing in bf16" in texts(at)
        assert len(at.get("plotly_chart")) == 1  # the learning curves, read from the run folder

        other = open_app(nav.TRAIN, **{keys.DATA_MODE: "path", keys.DATA_PATH: str(data)})  # another tab
        assert other.selectbox(key="w_train_run").value == str(run_dir) and "1 epoch done" in texts(other)

        start_run(other, "class-run", 1)  # an existing, finished run: refused, pointing to resume
        assert any("already exists" in e.value for e in other.error)

        other.number_input(key="w_resume_epochs").set_value(500)
        other.button(key="w_train_resume").click().run()
        assert not other.exception and not other.error
        assert jobs.is_running(run_dir)
        assert compute.use_app_threads() == 1 == torch.get_num_threads()  # the app leaves the job its core
        other.button(key="w_train_stop").click().run()
        assert not other.exception
        assert not jobs.is_running(run_dir) and "Not running" in texts(other)
        assert compute.use_app_threads() == 2
    finally:
        jobs.stop(run_dir)
        torch.set_num_threads(1)


@pytest.mark.skipif(len(train_form.thread_choices()) < 2, reason="one core: no thread count to choose")
def test_train_page_trains_and_resumes_on_the_cpu_threads_chosen(env, tmp_path):
    """The form's CPU threads (1 unless chosen: the app keeps a core) reach the training process, and Resume starts
    at the threads the run trained on, which continue it exactly."""
    data = tiny_fer_csv(tmp_path, n_train=140, n_val=35)
    at = open_app(nav.TRAIN, **{keys.DATA_MODE: "path", keys.DATA_PATH: str(data)})
    threads = at.selectbox(key=train_form.THREADS_KEY)
    assert threads.options == [str(n) for n in train_form.thread_choices()] and threads.value == JOB_THREADS == 1
    threads.set_value(2)
    run_dir = env["runs"] / "two-threads"
    commands = lambda: [line for line in (run_dir / jobs.LOG_FILE).read_text().splitlines() if line.startswith("$ ")]
    try:
        start_run(at, "two-threads", 1)
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert wait_until(lambda: not jobs.is_running(run_dir)), jobs.status(run_dir).log_tail
        assert json.loads((run_dir / "config.json").read_text())["threads"] == 2 and "--threads 2" in commands()[-1]
        at.run()
        assert at.selectbox(key="w_resume_threads_two-threads").value == 2  # as it trained
        at.number_input(key="w_resume_epochs").set_value(2)
        at.button(key="w_train_resume").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert wait_until(lambda: not jobs.is_running(run_dir)), jobs.status(run_dir).log_tail
        assert len(commands()) == 2 and "--threads 2" in commands()[-1]
        assert len(json.loads((run_dir / "history.json").read_text())) == 2
    finally:
        jobs.stop(run_dir)


def form_widget(at: AppTest, key: str):
    """The new-run form's widget with this key, whatever its kind."""
    for kind in ("selectbox", "number_input", "text_input"):
        found = [w for w in at.get(kind) if w.key == key]
        if found:
            return found[0]
    raise AssertionError(f"no widget {key!r} on the page")


def shown_form(at: AppTest) -> dict:
    return {key: form_widget(at, key).value for key in train_form.FORM_KEYS.values()}


def test_train_page_recipes_fill_the_form_and_start_exactly_their_config(env, tmp_path):
    from fercore.config import DEFAULT_RECIPE, RECIPES

    data = tiny_fer_csv(tmp_path, n_train=70, n_val=35)
    at = open_app(nav.TRAIN, **{keys.DATA_MODE: "path", keys.DATA_PATH: str(data)})
    # what the page shows first is fercore's default recipe, the class demo, as this computer's precision runs it
    precision = train_form.auto_precision()[1].name
    offered = {name: recipe.in_precision(precision) for name, recipe in RECIPES.items()}
    assert offered == train_form.recipes()
    assert at.selectbox(key="w_train_recipe").value == DEFAULT_RECIPE == "demo"
    assert shown_form(at) == train_form.form_values(offered["demo"].config())
    assert form_widget(at, "w_train_model").value == "fernet_fullres" and form_widget(at, "w_train_lr").value == 3e-3
    assert offered["demo"].expect in texts(at) and "on PrivateTest" in texts(at)
    # bf16 trains about 3x faster, so the demo's 15 minutes hold more epochs there
    demo = RECIPES["demo"]
    assert demo.in_precision("fp32") == demo and demo.in_precision("bf16").expect != demo.expect
    assert demo.in_precision("bf16").config().epochs > demo.config().epochs
    assert "needs your own" not in texts(at)  # this data has a Training split
    assert "auto means fp32" in texts(at) or "auto means bf16" in texts(at)

    for name, recipe in offered.items():
        at.selectbox(key="w_train_recipe").set_value(name).run()
        assert not at.exception and shown_form(at) == train_form.form_values(recipe.config()), name
        assert recipe.expect in texts(at)
    assert form_widget(at, "w_train_epochs").value == 10 == TrainConfig().epochs  # Custom: fercore's defaults

    at.selectbox(key="w_train_recipe").set_value("homework").run()
    assert form_widget(at, "w_train_augment").value == "flip=0.5,shift=0.1,rotate=10,zoom=0.1"
    at.number_input(key="w_train_epochs").set_value(1)  # the homework's recipe, one epoch of it
    at.text_input(key="w_train_name").set_value("homework-1")
    at.button(key="FormSubmitter:new_run-Start training").click().run()
    run_dir = env["runs"] / "homework-1"
    try:
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert wait_until(lambda: (run_dir / "config.json").exists()), jobs.status(run_dir).log_tail
    finally:
        jobs.stop(run_dir)
    started = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert started == offered["homework"].config(epochs=1, data=str(data), threads=JOB_THREADS)


def test_train_page_says_a_real_run_needs_the_users_data(env):
    at = open_app(nav.TRAIN, **{keys.DATA_MODE: "default"})
    assert not at.exception and "needs your own `fer2013.csv`" in texts(at)
    assert "A file or folder on this computer" in texts(at)


def test_train_page_shows_a_bad_augmentation_in_a_red_box(env, tmp_path):
    data = tiny_fer_csv(tmp_path, n_train=70, n_val=35)
    at = open_app(nav.TRAIN, **{keys.DATA_MODE: "path", keys.DATA_PATH: str(data)})
    at.text_input(key="w_train_augment").set_value("wobble=3")
    at.text_input(key="w_train_name").set_value("wobbly")
    at.button(key="FormSubmitter:new_run-Start training").click().run()
    assert not at.exception and any("wobble" in e.value for e in at.error)
    assert not (env["runs"] / "wobbly").exists()


def test_train_page_refuses_unlabeled_data_before_starting(env, tmp_path):
    pixels, _ = learnable_faces(14)
    data = write_course_test_csv(tmp_path / "test.csv", pixels)
    at = open_app(nav.TRAIN, **{keys.DATA_MODE: "path", keys.DATA_PATH: str(data)})
    assert not at.exception
    assert any("no labels" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "FormSubmitter:new_run-Start training"]


# -------------------------------------------------------------------------------------------------- bad input

def test_bad_data_path_shows_an_error_and_the_page_stays_usable(env, tmp_path):
    bad = tmp_path / "broken.csv"
    bad.write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")
    at = open_app(**on_data(env, **{keys.DATA_PATH: str(bad)}))
    assert any("broken.csv" in e.value for e in at.error)
    at.text_input(key=keys.DATA_PATH).set_value(str(env["data"])).run()
    assert not at.exception and not at.error and len(at.get("plotly_chart")) == 1


def test_uploaded_csv_is_parsed_and_a_bad_one_is_refused(env, tmp_path):
    at = open_app(**on_data(env, **{keys.DATA_MODE: "upload"}))
    assert "upload a CSV" in texts(at)
    at.file_uploader(key=keys.DATA_UPLOAD).upload("bad.csv", b"emotion,pixels,Usage\n9,1 2,PrivateTest\n", "text/csv")
    at.run()
    assert not at.exception and at.error

    pixels, labels = learnable_faces(28, seed=3)
    lines = ["emotion,pixels,Usage"] + [f"{label},{' '.join(map(str, face.ravel()))},PrivateTest"
                                        for face, label in zip(pixels, labels)]
    at.file_uploader(key=keys.DATA_UPLOAD).set_value(("good.csv", "\n".join(lines).encode(), "text/csv"))
    at.run()
    assert not at.exception and not at.error
    assert "28 images" in texts(at)


def test_a_broken_checkpoint_shows_an_error(env, tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "broken.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("FERCORE_CHECKPOINTS", str(shipped))
    at = open_app(**on_data(env, **{keys.CHECKPOINT: str(shipped / "broken.pt")}))
    assert any("broken.pt" in e.value for e in at.error)
    at.switch_page(nav.INSPECT).run()
    assert not at.exception and any("broken.pt" in e.value for e in at.error)


def test_a_shipped_checkpoint_is_continued_in_a_copy_with_the_sidebars_data(env, tmp_path, monkeypatch):
    from fercore.checkpoints import read_checkpoint, save_checkpoint

    shipped = tmp_path / "shipped"  # as shipped: trained on a data file that is not on this computer
    state = read_checkpoint(env["checkpoint"] / "last.pt")
    state.pop("format")
    state["config"]["data"] = "/elsewhere/fer2013.npz"
    (shipped / "tiny").mkdir(parents=True)
    save_checkpoint(state, shipped / "tiny" / "last.pt")
    (shipped / "tiny" / "config.json").write_text(json.dumps(state["config"]))
    before = {p.name: p.read_bytes() for p in (shipped / "tiny").iterdir()}
    monkeypatch.setenv("FERCORE_CHECKPOINTS", str(shipped))

    at = open_app(nav.TRAIN, **{keys.DATA_MODE: "path", keys.DATA_PATH: str(env["data"])})
    at.selectbox(key="w_continue_source").set_value(shipped / "tiny")
    at.text_input(key="w_continue_name").set_value("tiny-continued")
    at.button(key="w_continue_copy").click().run()
    copy = env["runs"] / "tiny-continued"
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state[keys.TRAIN_RUN] == str(copy) and (copy / "last.pt").exists()
    assert "not on this computer" in texts(at)
    try:
        at.number_input(key="w_resume_epochs").set_value(2)
        at.button(key="w_train_resume").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert wait_until(lambda: not jobs.is_running(copy)), jobs.status(copy).log_tail
        assert len(read_checkpoint(copy / "last.pt")["history"]) == 2, jobs.status(copy).log_tail
    finally:
        jobs.stop(copy)
    assert {p.name: p.read_bytes() for p in (shipped / "tiny").iterdir()} == before  # the shipped files untouched


def test_a_selection_is_a_cache_key_that_changes_with_its_files(tmp_path):
    """Selection and DataChoice read their files' stamps when made: equal while the files stay, different once
    one is replaced, and a result of the model alone (model_identity) ignores the data and the split."""
    from ui.sidebar import Selection
    from ui.sources import DataChoice

    data, checkpoint = tmp_path / "faces.csv", tmp_path / "model.pt"
    data.write_text("emotion,pixels,Usage\n")
    checkpoint.write_bytes(b"weights")

    def selection(split="PrivateTest"):
        return Selection(str(checkpoint), DataChoice(str(data), "faces"), split)

    first = selection()
    assert first == selection() and hash(first) == hash(selection())
    assert selection("PublicTest").model_identity() == first.model_identity()
    data.write_text("emotion,pixels,Usage\n3,0 0,PrivateTest\n")  # another size: another stamp
    assert selection() != first and selection().model_identity() == first.model_identity()
    checkpoint.write_bytes(b"retrained weights")
    assert selection().model_identity() != first.model_identity()
