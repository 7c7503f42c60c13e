"""The Model and Compare pages through streamlit.testing's AppTest, on test_app.py's classroom (a checkpoint trained
for real on a small data file) plus a second run trained here with another recipe."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fercore import models
from fercore.checkpoints import load_model
from fercore.data import load_dataset
from fercore.labels import CLASS_NAMES

from fixtures import tiny_fer_csv
from test_app import classroom, env, open_app, on_data, texts  # noqa: F401 -- fixtures used by name
from ui import keys, nav


@pytest.fixture(scope="module")
def second_run(classroom):  # noqa: F811
    """A run beside the classroom's checkpoint: the same data, a higher learning rate and flips."""
    from fercore.training import TrainConfig, train

    torch.set_num_threads(1)
    config = TrainConfig(model="fernet", epochs=1, batch_size=32, threads=1, lr=3e-3, augment={"flip": 0.5},
                         data=str(classroom["data"]))
    folder = classroom["runs"] / "flipped"
    train(config, folder, dataset=load_dataset(classroom["data"]))
    return folder


def probabilities(checkpoint, data_path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the checkpoint's softmax on a split, from a plain forward pass, and the split's labels."""
    loaded = load_model(checkpoint)
    data = load_dataset(data_path).select_split(split)
    with torch.inference_mode():
        return torch.softmax(loaded.model(loaded.preprocess(data.pixels)), 1).numpy(), data.labels


def accuracy(checkpoint, data_path, split: str) -> float:
    """Brute force: the checkpoint's accuracy on a split."""
    probs, labels = probabilities(checkpoint, data_path, split)
    return float((probs.argmax(1) == labels).mean())


class ComputeLines(logging.Handler):
    """The server's 'computed ...' lines (ui.compute.computing), to count how often a result was computed."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def compute_lines():
    handler, log = ComputeLines(), logging.getLogger("fercore.app.compute")
    log.addHandler(handler)
    yield handler.lines
    log.removeHandler(handler)


# ----------------------------------------------------------------------------------------------------------- model

def test_model_page_shows_layers_recipe_curves_and_accuracy_per_split(env):
    at = open_app(nav.MODEL, **on_data(env))
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Model"
    expected = models.summary(models.fernet())
    layers = at.dataframe[0].value
    assert list(layers["layer"]) == [row.name for row in expected.layers]
    assert list(layers["output shape"]) == [row["output shape"] for row in expected.rows()]
    assert layers["parameters"].sum() == 1_165_159
    assert "**1,165,159 parameters** (1,165,159 trainable, 0 not)" in texts(at)
    assert "so it would show 1,167,015" in texts(at)  # + BatchNorm's 1,856 running statistics, as Keras counts

    recipe = at.table[0].value["value"].to_dict()
    assert recipe["epochs"] == "1 of 1" and recipe["batch size"] == "32" and recipe["augmentation"] == "none"
    assert len(at.get("plotly_chart")) == 1  # the learning curves

    splits = at.dataframe[1].value
    assert list(splits["split"]) == ["PublicTest", "PrivateTest"]
    for split, value in zip(splits["split"], splits["accuracy"]):
        assert value == pytest.approx(accuracy(env["checkpoint"], env["data"], split))
    assert "has no Training split" in texts(at)
    downloads = {d.proto.label: d.proto for d in at.get("download_button")}
    assert set(downloads) == {"Layers (CSV)", "Learning curves (CSV)", "Report: the five questions (HTML)"}
    assert not downloads["Report: the five questions (HTML)"].disabled


def test_model_page_adds_the_deduplicated_rows_when_the_data_has_training(env, tmp_path):
    csv_path = tiny_fer_csv(tmp_path)  # Training and PublicTest rows
    at = open_app(nav.MODEL, **on_data(env, **{keys.DATA_PATH: str(csv_path), keys.SPLIT: "PublicTest"}))
    assert not at.exception and not at.error, [e.value for e in at.error]
    splits = at.dataframe[1].value
    assert list(splits["split"]) == ["Training", "PublicTest", "PublicTest without Training duplicates"]
    assert list(splits["images"]) == [70, 35, 35]  # the generated faces are all different
    assert "without Training duplicates" in texts(at) and "has no Training split" not in texts(at)


def test_model_page_shares_the_confusion_pages_evaluations(env, tmp_path, compute_lines):
    data = tmp_path / "faces.npz"  # a data file of its own, so no earlier test has filled the caches for it
    shutil.copyfile(env["data"], data)
    at = open_app(nav.MODEL, **on_data(env, **{keys.DATA_PATH: str(data)}))
    assert not at.exception and not at.error
    at.switch_page(nav.CONFUSION).run()
    assert not at.exception and not at.error
    evaluations = [line for line in compute_lines if line.startswith("computed evaluation")]
    name = Path(env["checkpoint"]).name
    assert sorted(line.split(" in ")[0] for line in evaluations) == [
        f"computed evaluation on PrivateTest (tta False) for {name}",
        f"computed evaluation on PublicTest (tta False) for {name}"]


def test_model_page_with_a_broken_checkpoint_shows_an_error(env, tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "broken.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("FERCORE_CHECKPOINTS", str(shipped))
    at = open_app(nav.MODEL, **on_data(env, **{keys.CHECKPOINT: str(shipped / "broken.pt")}))
    assert not at.exception and any("broken.pt" in e.value for e in at.error)


# --------------------------------------------------------------------------------------------------------- compare

def test_compare_page_puts_the_two_runs_side_by_side(env, second_run):
    at = open_app(nav.COMPARE, **on_data(env))
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Compare"
    assert at.multiselect(key=keys.COMPARE_RUNS).value == [str(env["checkpoint"]), str(second_run)]
    table = at.table[0].value  # one column per run
    assert list(table.columns) == ["tiny (shipped)", "flipped (run)"]
    assert list(table.loc["learning rate"]) == ["0.001", "0.003"]
    assert list(table.loc["augmentation"]) == ["none", "flip 0.5"]
    assert "model" not in table.index  # the same for both
    for value, run in zip(table.loc["accuracy"], (env["checkpoint"], second_run)):
        assert value == f"{accuracy(run, env['data'], 'PrivateTest'):.1%}"
    assert [f"{name} recall" for name in CLASS_NAMES] == [c for c in table.index if c.endswith(" recall")]
    assert "Settings that differ: learning rate, augmentation" in texts(at)
    first, labels = probabilities(env["checkpoint"], env["data"], "PrivateTest")
    second, _ = probabilities(second_run, env["data"], "PrivateTest")
    together = ((first + second).argmax(1) == labels).mean()  # the ensemble: probabilities averaged per face
    assert f"they get {together:.1%} of these images right" in texts(at).replace("**", "")
    assert "scripts/question2.py" in texts(at)
    assert len(at.get("plotly_chart")) == 2  # the confusion difference and the recall bars
    assert "Confusion: flipped (run) - tiny (shipped)" in texts(at)
    assert len(at.get("download_button")) == 1


def test_compare_page_with_one_pick_shows_its_row_and_no_difference(env, second_run):
    at = open_app(nav.COMPARE, **on_data(env, **{keys.COMPARE_RUNS: [str(second_run)]}))
    assert not at.exception and not at.error
    assert list(at.table[0].value.columns) == ["flipped (run)"]
    assert len(at.get("plotly_chart")) == 0
    at.multiselect(key=keys.COMPARE_RUNS).set_value([]).run()
    assert not at.exception and "Pick two or more checkpoints" in texts(at)


def test_a_bad_checkpoint_among_the_picks_is_named_and_the_rest_compared(env, second_run):
    broken = env["runs"] / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "last.pt").write_bytes(b"\x00 truncated")
    try:
        picks = [str(env["checkpoint"]), str(broken), str(second_run)]
        at = open_app(nav.COMPARE, **on_data(env, **{keys.COMPARE_RUNS: picks}))
        assert not at.exception
        assert len(at.error) == 1 and "Could not compare broken (run)" in at.error[0].value
        assert list(at.table[0].value.columns) == ["tiny (shipped)", "flipped (run)"]
        assert len(at.get("plotly_chart")) == 2
    finally:
        shutil.rmtree(broken)


def test_compare_page_on_unlabelled_data_says_it_needs_labels(env, tmp_path):
    from fixtures import write_course_test_csv

    pixels = np.zeros((5, 48, 48), np.uint8)
    path = write_course_test_csv(tmp_path / "test.csv", pixels)
    at = open_app(nav.COMPARE, **on_data(env, **{keys.DATA_PATH: str(path), keys.SPLIT: "all"}))
    assert not at.exception and "has no labels" in texts(at)


def test_model_page_on_unlabelled_data_shows_the_model_and_names_the_file(env, tmp_path):
    from fixtures import write_course_test_csv

    path = write_course_test_csv(tmp_path / "test.csv", np.zeros((5, 48, 48), np.uint8))
    at = open_app(nav.MODEL, **on_data(env, **{keys.DATA_PATH: str(path), keys.SPLIT: "all"}))
    assert not at.exception
    assert at.dataframe[0].value["parameters"].sum() == 1_165_159  # the layers are still shown
    assert len(at.error) == 1 and "test.csv has no labels" in at.error[0].value
    report = [d.proto for d in at.get("download_button") if d.proto.label.startswith("Report")]
    assert len(report) == 1 and report[0].disabled  # a report needs the true classes
