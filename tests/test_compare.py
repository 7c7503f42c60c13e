"""fercore.compare on the shipped run files and on two small CNNs trained for real with different recipes, checked
against brute-force recounts of their predictions."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fercore import compare, evaluation, render
from fercore.checkpoints import load_model
from fercore.data import FerDataset
from fercore.labels import CLASS_NAMES, PRIVATE_TEST, PUBLIC_TEST
from fixtures import ROOT, learnable_faces

RECIPE_ORDER = ["optimizer", "learning rate", "schedule", "batch size", "epochs", "normalization", "augmentation",
                "class balance", "label smoothing", "weight decay", "seed", "device and precision", "wall time"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """Two fernets trained one epoch on the same 64 faces, one plain and one with a higher learning rate and flips,
    and both evaluated on the same 70 held-out faces."""
    from fercore.training import TrainConfig, train

    pixels, labels = learnable_faces(134, seed=5)
    split = np.array([PUBLIC_TEST] * 64 + [PRIVATE_TEST] * 70, dtype=np.uint8)
    dataset = FerDataset(pixels, labels, split, np.arange(134).astype(str), source="faces")
    root = tmp_path_factory.mktemp("compare")
    plain = TrainConfig(model="fernet", epochs=1, batch_size=32, threads=1)
    changed = TrainConfig(model="fernet", epochs=1, batch_size=32, threads=1, lr=3e-3, augment={"flip": 0.5})
    for name, config in (("plain", plain), ("changed", changed)):
        train(config, root / name, dataset=dataset)
    loaded = [load_model(root / name) for name in ("plain", "changed")]
    held_out = dataset.select_split("PrivateTest")
    return {"loaded": loaded, "data": held_out, "root": root,
            "evaluations": [evaluation.evaluate_checkpoint(run, held_out, use_cache=False) for run in loaded]}


# ------------------------------------------------------------------------------------------------------- recipe

def shipped(name: str) -> tuple[dict, list]:
    folder = ROOT / "checkpoints" / name
    return json.loads((folder / "config.json").read_text()), json.loads((folder / "history.json").read_text())


def test_recipe_of_the_shipped_hw3_reads_like_the_homework():
    config, history = shipped("hw3")
    recipe = compare.recipe(config, history)
    assert list(recipe) == RECIPE_ORDER
    assert recipe["optimizer"] == "Adam" and recipe["learning rate"] == "0.001" and recipe["batch size"] == "128"
    assert recipe["schedule"] == "constant" and recipe["normalization"] == "/255"
    assert recipe["augmentation"] == "flip 0.5, shift 0.1, rotate 10°, zoom 0.1"
    assert recipe["epochs"] == f"{len(history)} of 250"
    total = sum(r["seconds"] for r in history)
    assert recipe["wall time"] == (f"{compare.duration_text(total)} "
                                   f"({compare.duration_text(total / len(history))} per epoch)")
    assert recipe["device and precision"].endswith(", auto (bf16)")  # trained where auto meant bf16


def test_recipe_of_the_shipped_fernet_wide_shows_its_own_choices():
    recipe = compare.recipe(*shipped("fernet_wide"))
    assert recipe["schedule"].startswith("one-cycle") and recipe["weight decay"] == "0.0001"
    assert recipe["label smoothing"] == "0.1"
    assert recipe["augmentation"] == "flip 0.5, shift 0.1, rotate 10°, zoom 0.1, erase 0.25"
    assert recipe["device and precision"].endswith(", auto (bf16)")  # trained where auto meant bf16
    assert compare.settings(*shipped("fernet_wide"))["device and precision"] == recipe["device and precision"]


def test_recipe_without_a_config_says_not_recorded_instead_of_failing():
    recipe = compare.recipe({}, [])
    assert list(recipe) == RECIPE_ORDER
    assert recipe["learning rate"] == recipe["normalization"] == compare.NOT_RECORDED
    assert recipe["wall time"] == "no epoch yet" and recipe["augmentation"] == compare.NOT_RECORDED
    odd = compare.recipe({"lr": "fast", "augment": "homework", "epochs": 3}, [{"seconds": None}, "junk"])
    assert odd["learning rate"] == "fast" and odd["augmentation"] == "homework" and odd["epochs"] == "2 of 3"


@pytest.mark.parametrize("augment, text", [
    ({}, "none"), ({"flip": 0.0, "shift": 0.0}, "none"), ({"erase": 0.25, "rotate": 15.0}, "rotate 15°, erase 0.25"),
    ({"zoom": 0.1, "flip": 1.0}, "flip 1, zoom 0.1")])
def test_augmentation_text_lists_the_augmentations_that_are_on(augment, text):
    assert compare.augmentation_text(augment) == text


@pytest.mark.parametrize("seconds, text", [(42, "42 s"), (822, "13.7 min"), (4980, "1 h 23 min")])
def test_durations_read_in_the_unit_that_fits(seconds, text):
    assert compare.duration_text(seconds) == text


def test_compare_imports_no_torch():
    code = "import sys, fercore.compare; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---------------------------------------------------------------------------------------------------- compare

def test_compare_runs_shows_only_the_settings_that_differ_and_real_figures(runs):
    (plain, changed), (a, b) = runs["loaded"], runs["evaluations"]
    table = compare.compare_runs([plain, changed], [a, b])
    assert table.settings == ["learning rate", "augmentation"]
    rows = table.rows()
    assert [row["run"] for row in rows] == ["plain", "changed"]
    assert [row["augmentation"] for row in rows] == ["none", "flip 0.5"]
    assert [row["learning rate"] for row in rows] == ["0.001", "0.003"]
    assert "model" not in rows[0] and "seed" not in rows[0]
    labels = runs["data"].labels
    for row, run, result in zip(rows, (plain, changed), (a, b)):
        with torch.inference_mode():
            predicted = run.model(run.preprocess(runs["data"].pixels)).argmax(1).numpy()
        assert row["accuracy"] == pytest.approx((predicted == labels).mean())
        assert row["epochs"] == 1 and row["best validation accuracy"] == run.history[0]["val_acc"]
        disgust = labels == 1
        assert row["Disgust recall"] == pytest.approx((predicted[disgust] == 1).mean())
        assert [row[f"{name} recall"] for name in CLASS_NAMES] == pytest.approx(result.recall.tolist())


def test_the_ensemble_averages_each_faces_probabilities_over_the_runs(runs):
    (plain, changed), (a, b) = runs["loaded"], runs["evaluations"]
    faces = runs["data"].pixels
    with torch.inference_mode():
        mean = sum(torch.softmax(run.model(run.preprocess(faces)), 1) for run in (plain, changed)) / 2
    expected = (mean.argmax(1).numpy() == runs["data"].labels).mean()
    table = compare.compare_runs([plain, changed], [a, b], labels=["A", "B"])
    np.testing.assert_allclose(table.ensemble_probabilities, mean.numpy(), atol=1e-5)
    assert table.ensemble_accuracy == pytest.approx(expected)
    best = max(a.accuracy, b.accuracy)
    text = table.ensemble_text()
    assert f"**{expected:.1%}**" in text and f"against {best:.1%} for the best" in text
    assert f"({'A' if a.accuracy >= b.accuracy else 'B'})" in text
    assert compare.compare_runs([plain, plain], [a, a]).ensemble_accuracy == pytest.approx(a.accuracy)


def test_comparison_csv_holds_the_table(runs):
    table = compare.compare_runs(runs["loaded"], runs["evaluations"], labels=["A", "B"])
    parsed = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert [row["run"] for row in parsed] == ["A", "B"]
    assert float(parsed[1]["accuracy"]) == pytest.approx(runs["evaluations"][1].accuracy)
    assert list(parsed[0]) == list(table.rows()[0])


def test_a_run_compared_with_itself_differs_in_nothing(runs):
    run, result = runs["loaded"][0], runs["evaluations"][0]
    assert compare.compare_runs([run, run], [result, result]).settings == []


def test_runs_must_be_evaluated_on_the_same_labelled_images(runs):
    (plain, changed), (a, b) = runs["loaded"], runs["evaluations"]
    fewer = evaluation.evaluate_checkpoint(changed, runs["data"].subset(np.arange(40)), use_cache=False)
    with pytest.raises(ValueError, match="same images"):
        compare.compare_runs([plain, changed], [a, fewer])
    with pytest.raises(ValueError, match="one evaluation and one label per run"):
        compare.compare_runs([plain, changed], [a])
    with pytest.raises(ValueError, match="nothing to compare"):
        compare.compare_runs([], [])
    data = runs["data"]
    unlabelled = FerDataset(data.pixels, None, data.split, data.ids)
    blind = [evaluation.evaluate_checkpoint(run, unlabelled, use_cache=False) for run in (plain, changed)]
    with pytest.raises(ValueError, match="labelled data"):
        compare.compare_runs([plain, changed], blind)


def test_confusion_difference_is_b_minus_a_row_normalized(runs):
    a, b = runs["evaluations"]
    labels = runs["data"].labels

    def shares(result):
        counts = np.zeros((7, 7))
        np.add.at(counts, (labels, result.predictions), 1)
        return counts / counts.sum(axis=1, keepdims=True)

    difference = compare.confusion_difference(a, b)
    assert difference.shape == (7, 7)
    assert np.allclose(difference, shares(b) - shares(a))
    assert np.allclose(difference.sum(axis=1), 0.0)
    assert np.allclose(np.diag(difference), b.recall - a.recall)
    assert not compare.confusion_difference(a, a).any()


def test_default_labels_are_the_run_folder_names():
    assert compare.run_label("checkpoints/hw3/last.pt") == "hw3"
    assert compare.run_label("/x/runs/q2_1_raw/best.pt") == "q2_1_raw"
    assert compare.run_label("/x/models/mine.pt") == "mine"


def test_history_csv_keeps_every_field_of_every_epoch():
    _, history = shipped("hw3")
    parsed = list(csv.DictReader(io.StringIO(compare.csv_text(history))))
    assert len(parsed) == len(history)
    assert float(parsed[-1]["val_acc"]) == pytest.approx(history[-1]["val_acc"])


# ---------------------------------------------------------------------------------------------------- figures

def test_difference_figure_is_centred_at_zero_and_labelled_in_points(runs):
    difference = compare.confusion_difference(*runs["evaluations"])
    heatmap = render.confusion_difference_figure(difference, names=("plain", "changed")).data[0]
    assert heatmap.zmid == 0 and heatmap.zmin == -heatmap.zmax
    assert heatmap.zmax >= np.abs(difference).max() * 100
    assert np.allclose(np.asarray(heatmap.z), 100 * difference)
    assert heatmap.colorscale[len(heatmap.colorscale) // 2][1] == "rgb(247, 247, 247)"  # white at 0
    assert list(heatmap.y) == list(CLASS_NAMES)
    with pytest.raises(ValueError, match="7x7"):
        render.confusion_difference_figure(np.zeros((6, 6)))


def test_recall_bars_draw_one_group_per_run(runs):
    a, b = runs["evaluations"]
    figure = render.recall_bars({"plain": a.recall, "changed": b.recall})
    assert [trace.name for trace in figure.data] == ["plain", "changed"]
    assert np.allclose(figure.data[1].y, b.recall) and list(figure.data[0].x) == list(CLASS_NAMES)
    assert figure.data[0].marker.color != figure.data[1].marker.color
    with pytest.raises(ValueError, match="expected 7 recalls"):
        render.recall_bars({"short": [0.5] * 6})

