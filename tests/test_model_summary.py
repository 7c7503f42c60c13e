"""fercore.models.summary against the homework's Keras summary of hw3, and fercore.evaluation.split_accuracies on a
checkpoint trained for real, checked against a brute-force forward pass."""

import csv
import io
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from fercore import evaluation, models
from fercore.checkpoints import load_model
from fercore.data import FerDataset
from fercore.labels import PRIVATE_TEST, PUBLIC_TEST, TRAINING
from fixtures import learnable_faces


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------------------------------ summary

def test_hw3_summary_has_the_homeworks_shapes_and_parameter_counts():
    result = models.summary(models.hw3())
    shapes = {row.name: row.output_shape for row in result.layers}
    assert shapes["conv1"] == shapes["conv2"] == (64, 48, 48)
    assert shapes["pool1"] == (64, 24, 24)
    assert shapes["conv3"] == shapes["conv4"] == (128, 24, 24)
    assert shapes["pool2"] == (128, 12, 12)
    assert shapes["flatten"] == (18432,)
    assert shapes["fc1"] == (128,) and shapes["fc2"] == (7,)
    params = {row.name: row.params for row in result.layers}
    assert params["conv1"] == 9 * 64 + 64 and params["fc1"] == 18432 * 128 + 128 and params["fc2"] == 128 * 7 + 7
    assert params["relu1"] == params["pool1"] == 0
    assert result.total_params == result.trainable_params == 2_619_975
    assert result.non_trainable_params == 0
    # Keras' summary counts BatchNorm's moving mean and variance (64 + 128 + 128 channels, two each) as parameters.
    assert result.running_stats == 640 and result.total_params + result.running_stats == 2_620_615
    assert round(result.mflops) == 432


def test_layers_are_listed_in_the_order_they_run_with_their_kinds():
    result = models.summary(models.hw3())
    assert [row.name for row in result.layers] == [name for name, _ in models.hw3().named_children()]
    kinds = {row.name: row.kind for row in result.layers}
    assert kinds["conv1"] == "Conv2d" and kinds["bn_fc1"] == "BatchNorm1d" and kinds["drop1"] == "Dropout"


@pytest.mark.parametrize("name", models.model_names())
def test_every_registered_model_sums_to_its_parameter_count_and_flops(name):
    model = models.build_model(name)
    result = models.summary(model)
    assert result.total_params == sum(p.numel() for p in model.parameters())
    assert result.flops == models.count_flops(model)
    assert result.layers[-1].output_shape == (7,)


def test_fernet_has_its_documented_size():
    result = models.summary(models.fernet())
    assert result.total_params == 1_165_159
    assert {row.name: row.output_shape for row in result.layers}["conv1"] == (32, 24, 24)  # the stride-2 stem


def test_frozen_parameters_count_as_not_trainable():
    model = models.hw3()
    model.conv1.requires_grad_(False)
    result = models.summary(model)
    assert result.non_trainable_params == 640
    assert result.trainable_params == 2_619_975 - 640
    row = next(row for row in result.layers if row.name == "conv1")
    assert (row.params, row.trainable) == (640, 0)


def test_summary_leaves_the_model_as_it_was():
    model = models.hw3().train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    models.summary(model)
    assert model.training
    assert not any(module._forward_hooks for module in model.modules())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # BatchNorm's statistics untouched


def test_nested_modules_are_summarised_by_qualified_name():
    block = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    model = nn.Sequential(OrderedDict(block=block, pool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten(),
                                      fc=nn.Linear(16, 7)))
    result = models.summary(model, image_shape=(1, 8, 8))
    assert [(row.name, row.output_shape) for row in result.layers] == [
        ("block.0", (4, 8, 8)), ("block.1", (4, 8, 8)), ("pool", (4, 2, 2)), ("flatten", (16,)), ("fc", (7,))]


def test_rows_and_csv_hold_one_line_per_layer():
    result = models.summary(models.hw3())
    rows = result.rows()
    assert len(rows) == len(result.layers)
    assert rows[0] == {"layer": "conv1", "type": "Conv2d", "output shape": "64 x 48 x 48", "parameters": 640,
                       "trainable": 640}
    parsed = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [r["layer"] for r in parsed] == [r["layer"] for r in rows]
    assert sum(int(r["parameters"]) for r in parsed) == 2_619_975


def test_summary_of_a_trained_checkpoint_matches_its_architecture(checkpoint):
    loaded = load_model(checkpoint["run"])
    assert models.summary(loaded.model).rows() == models.summary(models.build_model(loaded.model_name)).rows()


# ------------------------------------------------------------------------------------------- split accuracies

COPIED = (0, 3, 4)  # PrivateTest positions that are byte-identical copies of Training images
COPIED_PUBLIC = (1,)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, one_thread):
    """A fernet trained one epoch on 70 Training faces; 25 PublicTest and 25 PrivateTest faces, some of them copies
    of Training faces (as FER2013 has)."""
    from fercore.training import TrainConfig, train

    pixels, labels = learnable_faces(120, seed=3)
    split = np.array([TRAINING] * 70 + [PUBLIC_TEST] * 25 + [PRIVATE_TEST] * 25, dtype=np.uint8)
    private, public = np.flatnonzero(split == PRIVATE_TEST), np.flatnonzero(split == PUBLIC_TEST)
    copies = [(private[p], 10 + k) for k, p in enumerate(COPIED)] + [(public[p], 20) for p in COPIED_PUBLIC]
    for target, source in copies:
        pixels[target], labels[target] = pixels[source], labels[source]
    dataset = FerDataset(pixels, labels, split, np.arange(120).astype(str), source="faces")
    run = tmp_path_factory.mktemp("summary") / "run"
    train(TrainConfig(model="fernet", epochs=1, batch_size=32, threads=1), run, dataset=dataset)
    return {"run": run, "dataset": dataset}


def brute_force_accuracy(loaded, dataset, rows) -> float:
    with torch.inference_mode():
        predicted = loaded.model(loaded.preprocess(dataset.pixels[rows])).argmax(1).numpy()
    return float((predicted == dataset.labels[rows]).mean())


def test_not_in_training_finds_the_exact_copies(checkpoint):
    dataset = checkpoint["dataset"]
    unique = evaluation.not_in_training(dataset, "PrivateTest")
    assert unique.shape == (25,) and np.flatnonzero(~unique).tolist() == list(COPIED)
    assert np.flatnonzero(~evaluation.not_in_training(dataset, PUBLIC_TEST)).tolist() == list(COPIED_PUBLIC)
    assert evaluation.not_in_training(dataset.select_split("PrivateTest"), "PrivateTest").all()  # no Training


def test_split_accuracies_match_a_brute_force_forward_pass(checkpoint):
    loaded, dataset = load_model(checkpoint["run"]), checkpoint["dataset"]
    rows = evaluation.split_accuracies(loaded, dataset)
    assert [r["split"] for r in rows] == ["Training", "PublicTest", "PublicTest without Training duplicates",
                                          "PrivateTest", "PrivateTest without Training duplicates"]
    by_split = {r["split"]: r for r in rows}
    for code, name in ((TRAINING, "Training"), (PUBLIC_TEST, "PublicTest"), (PRIVATE_TEST, "PrivateTest")):
        positions = np.flatnonzero(dataset.split == code)
        assert by_split[name]["images"] == len(positions)
        assert by_split[name]["accuracy"] == pytest.approx(brute_force_accuracy(loaded, dataset, positions))
    private = np.flatnonzero(dataset.split == PRIVATE_TEST)
    kept = np.delete(private, COPIED)
    deduplicated = by_split["PrivateTest without Training duplicates"]
    assert deduplicated["images"] == 22
    assert deduplicated["accuracy"] == pytest.approx(brute_force_accuracy(loaded, dataset, kept))


def test_split_accuracies_evaluate_each_split_once_through_the_given_function(checkpoint):
    loaded, dataset = load_model(checkpoint["run"]), checkpoint["dataset"]
    asked = []

    def evaluate(name):
        asked.append(name)
        return evaluation.evaluate_checkpoint(loaded, dataset.select_split(name), use_cache=False)

    assert evaluation.split_accuracies(loaded, dataset, evaluate=evaluate) == evaluation.split_accuracies(loaded,
                                                                                                           dataset)
    assert asked == ["Training", "PublicTest", "PrivateTest"]


def test_without_a_training_split_there_are_no_duplicate_rows(checkpoint):
    loaded, dataset = load_model(checkpoint["run"]), checkpoint["dataset"]
    tests_only = dataset.subset(dataset.split != TRAINING)
    assert [r["split"] for r in evaluation.split_accuracies(loaded, tests_only)] == ["PublicTest", "PrivateTest"]


def test_unlabelled_data_is_refused_by_name(checkpoint):
    loaded, dataset = load_model(checkpoint["run"]), checkpoint["dataset"]
    unlabelled = FerDataset(dataset.pixels, None, dataset.split, dataset.ids, source="test.csv")
    with pytest.raises(ValueError, match="test.csv has no labels"):
        evaluation.split_accuracies(loaded, unlabelled)
