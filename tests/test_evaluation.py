"""fercore.evaluation on a small CNN trained for real on faces whose class is the position of a bright square.

The evaluation labels are partly shuffled so every row of the confusion matrix has off-diagonal cells; every figure
is checked against a brute-force recount from the predictions, and the cache against forward-pass counts.
"""

import csv
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from fercore import evaluation as ev
from fercore.checkpoints import LoadedModel
from fercore.data import FerDataset
from fercore.compare import csv_text
from fercore.labels import CLASS_NAMES, NUM_CLASSES, PRIVATE_TEST, PUBLIC_TEST
from fercore.transforms import Normalizer
from fixtures import learnable_faces


def tiny_cnn() -> nn.Sequential:
    """Small, with BatchNorm after a conv and after a linear layer (evaluation folds those into the weights)."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12 * 12, 16),
                         nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, NUM_CLASSES))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def trained(one_thread):
    """(model, normalizer): a tiny CNN trained for a second or two until it reads the square's position."""
    torch.manual_seed(0)
    pixels, labels = learnable_faces(420, seed=1)
    normalizer = Normalizer.fit("scale255", pixels)
    x, y = normalizer(torch.from_numpy(pixels)), torch.from_numpy(labels).long()
    model = tiny_cnn()
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    for step in range(40):  # SGD with momentum by hand: torch.optim's first step imports torch._dynamo (seconds)
        batch = torch.randint(0, len(x), (64,))
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x[batch]), y[batch]), params)
        with torch.no_grad():
            for p, g, v in zip(params, grads, velocity):
                p.sub_(0.05 * v.mul_(0.9).add_(g))
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9, "the test model did not learn"
    return model, normalizer


@pytest.fixture(scope="module")
def dataset():
    """210 fresh faces, a quarter of them relabelled at random, half PublicTest and half PrivateTest."""
    pixels, labels = learnable_faces(210, seed=7)
    rng = np.random.default_rng(3)
    noisy = rng.random(len(labels)) < 0.25
    labels = np.where(noisy, rng.integers(0, NUM_CLASSES, len(labels)), labels)
    split = np.where(np.arange(len(labels)) % 2 == 0, PUBLIC_TEST, PRIVATE_TEST)
    return FerDataset(pixels, labels, split, np.arange(len(labels)).astype(str), source="generated")


@pytest.fixture
def forward_calls(trained):
    """A list that grows by one per forward call of the trained model's first layer during the test."""
    calls = []
    handle = trained[0][0].register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def softmax(model, x) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(x), 1).numpy()


def test_probabilities_and_metrics_match_a_recount(trained, dataset):
    model, normalizer = trained
    result = ev.evaluate(model, normalizer, dataset, batch_size=64)
    assert result.probabilities.dtype == np.float32 and result.probabilities.shape == (len(dataset), 7)
    expected = softmax(model, normalizer(torch.from_numpy(dataset.pixels)))
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(result.predictions, expected.argmax(1))
    assert not result.tta and not result.from_cache and result.labeled

    counts = np.zeros((7, 7), dtype=np.int64)
    for true, pred in zip(dataset.labels, result.predictions):
        counts[true, pred] += 1
    np.testing.assert_array_equal(result.confusion, counts)
    assert counts.trace() < counts.sum() and (counts.sum(1) > 0).all()  # the noisy labels make errors
    assert result.accuracy == pytest.approx(sum(t == p for t, p in zip(dataset.labels, result.predictions)) / 210)
    for c in range(7):
        row, column = counts[c].sum(), counts[:, c].sum()
        assert result.confusion_normalized[c] == pytest.approx(counts[c] / row)
        precision = counts[c, c] / column if column else 0.0
        recall = counts[c, c] / row
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert (result.precision[c], result.recall[c], result.f1[c]) == pytest.approx((precision, recall, f1))
        assert result.support[c] == row
        assert result.per_class()[c]["f1"] == pytest.approx(f1)
    assert result.macro_f1 == pytest.approx(np.mean(result.f1))
    read_back = list(csv.reader(io.StringIO(csv_text(result.confusion_rows()))))  # the Confusion page's CSV
    assert read_back[0] == ["true \\ predicted", *CLASS_NAMES]
    assert [row[0] for row in read_back[1:]] == list(CLASS_NAMES)
    np.testing.assert_array_equal(np.array([row[1:] for row in read_back[1:]], dtype=np.int64), counts)


def test_cells_rank_images_by_confidence_like_a_brute_force_sort(trained, dataset):
    model, normalizer = trained
    result = ev.evaluate(model, normalizer, dataset)
    seen = 0
    for true in range(7):
        for pred in range(7):
            members = [i for i in range(len(dataset))
                       if dataset.labels[i] == true and result.predictions[i] == pred]
            ranked = sorted(members, key=lambda i: (-result.probabilities[i, pred], i))
            cell = result.cell(true, pred)
            assert cell.indices.tolist() == ranked
            np.testing.assert_array_equal(cell.probabilities, result.probabilities[ranked].reshape(-1, 7))
            assert np.all(np.diff(cell.confidence) <= 0)
            seen += len(cell)
    assert seen == len(dataset)
    predicted_sad = [i for i in range(len(dataset)) if result.predictions[i] == 4]
    assert sorted(result.cell(None, 4).indices.tolist()) == predicted_sad


def test_one_split_reports_dataset_rows(trained, dataset):
    model, normalizer = trained
    whole = ev.evaluate(model, normalizer, dataset)
    private = ev.evaluate(model, normalizer, dataset, split="PrivateTest")
    rows = np.flatnonzero(dataset.split == PRIVATE_TEST)
    np.testing.assert_array_equal(private.rows, rows)
    np.testing.assert_allclose(private.probabilities, whole.probabilities[rows], atol=1e-6)
    assert private.split == "PrivateTest" and "PrivateTest" in private.describe()
    for true, pred in [(2, 2), (2, 4), (3, 3)]:
        cell = private.cell(true, pred)
        assert set(cell.indices) <= set(rows)
        assert all(dataset.labels[i] == true and whole.predictions[i] == pred for i in cell.indices)


def test_cell_mean_faces_match_a_manual_mean(trained, dataset):
    model, normalizer = trained
    result = ev.evaluate(model, normalizer, dataset)
    for true in range(7):
        for pred in range(7):
            members = [i for i in range(len(dataset)) if dataset.labels[i] == true and result.predictions[i] == pred]
            face = ev.cell_mean_face(result, dataset, true, pred)
            if not members:
                assert face is None
                continue
            manual = sum(dataset.pixels[i].astype(np.float64) for i in members) / len(members)
            assert face.dtype == np.float32
            np.testing.assert_allclose(face, manual, rtol=1e-6, atol=1e-4)
    other = dataset.subset(np.arange(10))
    with pytest.raises(ValueError, match="not the one"):
        ev.cell_mean_face(result, other, 0, 0)


def test_mean_saliency_is_the_mean_of_normalized_gradient_maps(trained, dataset):
    model, normalizer = trained
    result = ev.evaluate(model, normalizer, dataset)
    true, pred = max(((t, p) for t in range(7) for p in range(7) if t != p),
                     key=lambda cell: len(result.cell(*cell)))
    indices = result.cell(true, pred).indices
    assert len(indices) >= 2

    manual = np.zeros((48, 48))
    for i in indices:  # one image at a time: |d logit_pred / d x|, scaled to sum 1
        x = normalizer(torch.from_numpy(dataset.pixels[i:i + 1])).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[0, pred], x)
        grad = grad[0, 0].abs().numpy().astype(np.float64)
        manual += grad / grad.sum()
    manual /= len(indices)

    mean = ev.cell_mean_saliency(result, model, normalizer, dataset, true, pred, batch_size=3)
    assert mean.shape == (48, 48) and mean.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(mean, manual, rtol=1e-4, atol=1e-8)

    calls = []

    def centre_only(model_, images, target):  # any method with the saliency calling convention
        calls.append((images.shape, target))
        maps = np.zeros((len(images), 48, 48), np.float32)
        maps[:, 24, 24] = 5.0
        return maps

    custom = ev.cell_mean_saliency(result, model, normalizer, dataset, true, pred, saliency=centre_only, limit=2)
    assert calls == [((2, 1, 48, 48), pred)]
    assert custom[24, 24] == pytest.approx(1.0) and custom.sum() == pytest.approx(1.0)


def test_cache_reopens_without_a_forward_pass_and_misses_on_changes(trained, dataset, tmp_path, forward_calls):
    model, normalizer = trained
    calls = forward_calls
    first = ev.evaluate(model, normalizer, dataset, cache_key="ckpt-a", cache_dir=tmp_path)
    computed = len(calls)
    assert computed > 0 and not first.from_cache
    files = list((tmp_path / "evaluation").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "evaluation").glob("*.tmp"))

    again = ev.evaluate(model, normalizer, dataset, cache_key="ckpt-a", cache_dir=tmp_path)
    assert len(calls) == computed and again.from_cache
    np.testing.assert_array_equal(again.probabilities, first.probabilities)
    np.testing.assert_array_equal(again.confusion, first.confusion)

    changed_pixels = dataset.pixels.copy()
    changed_pixels[0, 0, 0] ^= 1
    changed = FerDataset(changed_pixels, dataset.labels, dataset.split, dataset.ids)
    for kwargs, data in [(dict(tta=True), dataset), (dict(split="PublicTest"), dataset),
                         (dict(cache_key="ckpt-b"), dataset), ({}, changed)]:
        before = len(calls)
        options = dict(dict(cache_key="ckpt-a", cache_dir=tmp_path), **kwargs)
        assert not ev.evaluate(model, normalizer, data, **options).from_cache, kwargs
        assert len(calls) > before
    assert len(list((tmp_path / "evaluation").glob("*.npz"))) == 5

    before = len(calls)
    ev.evaluate(model, normalizer, dataset)  # no key: never cached
    assert not ev.evaluate(model, normalizer, dataset).from_cache and len(calls) > before


def test_default_cache_dir_comes_from_the_environment(trained, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path / "env-cache"))
    model, normalizer = trained
    ev.evaluate(model, normalizer, dataset, cache_key="env")
    assert ev.evaluate(model, normalizer, dataset, cache_key="env").from_cache
    assert len(list((tmp_path / "env-cache" / "evaluation").glob("*.npz"))) == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong_shape"])
def test_a_corrupt_cache_file_is_recomputed(trained, dataset, tmp_path, damage, forward_calls):
    model, normalizer = trained
    first = ev.evaluate(model, normalizer, dataset, cache_key="ckpt", cache_dir=tmp_path)
    (path,) = (tmp_path / "evaluation").glob("*.npz")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not an npz at all" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a well-formed archive with the right meta but the wrong number of rows
        with np.load(path) as archive:
            meta = archive["meta"]
        with open(path, "wb") as f:
            np.savez(f, meta=meta, probabilities=np.zeros((3, 7), np.float32), seconds=np.float64(0))
    calls = forward_calls
    calls.clear()
    again = ev.evaluate(model, normalizer, dataset, cache_key="ckpt", cache_dir=tmp_path)
    assert calls and not again.from_cache
    np.testing.assert_allclose(again.probabilities, first.probabilities, atol=1e-6)
    assert ev.evaluate(model, normalizer, dataset, cache_key="ckpt", cache_dir=tmp_path).from_cache


def test_tta_averages_the_mirror_and_says_so(trained, dataset):
    model, normalizer = trained
    plain = ev.evaluate(model, normalizer, dataset)
    tta = ev.evaluate(model, normalizer, dataset, tta=True)
    x = normalizer(torch.from_numpy(dataset.pixels))
    expected = 0.5 * (softmax(model, x) + softmax(model, torch.flip(x, dims=[3])))
    np.testing.assert_allclose(tta.probabilities, expected, atol=1e-5)
    assert np.abs(tta.probabilities - plain.probabilities).max() > 0.1  # the square's mirror is another class
    assert tta.tta is True and plain.tta is False
    assert "TTA" in tta.describe() and "mirror" in tta.tta_note
    assert "no test-time augmentation" in plain.describe()


def test_unlabeled_data_gives_predictions_only(trained, dataset):
    model, normalizer = trained
    unlabeled = FerDataset(dataset.pixels, None, dataset.split, dataset.ids)
    result = ev.evaluate(model, normalizer, unlabeled)
    assert not result.labeled and result.probabilities.shape == (210, 7)
    assert "unlabeled" in result.describe()
    with pytest.raises(ValueError, match="unlabeled"):
        result.confusion
    with pytest.raises(ValueError, match="unlabeled"):
        result.accuracy
    ranked = result.cell(None, 0)
    assert np.all(result.predictions[ranked.indices] == 0) and np.all(np.diff(ranked.confidence) <= 0)


def test_evaluate_checkpoint_uses_the_key_and_leaves_the_model_alone(trained, dataset, tmp_path):
    model, normalizer = trained
    loaded = LoadedModel(model=model, model_name="tiny", normalizer=normalizer, config={}, key="k123")
    weight = model[0].weight
    result = ev.evaluate_checkpoint(loaded, dataset, split=PRIVATE_TEST, cache_dir=tmp_path)
    assert result.model_key == "k123" and result.model_name == "tiny" and result.describe().startswith("tiny on")
    assert ev.evaluate_checkpoint(loaded, dataset, split="privatetest", cache_dir=tmp_path).from_cache
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["n"] == len(result) == 105 and summary["confusion"] == result.confusion.tolist()
    assert summary["accuracy"] == pytest.approx(result.accuracy) and summary["tta"] is False
    unlabeled = FerDataset(dataset.pixels, None, dataset.split, dataset.ids)
    np.testing.assert_array_equal(ev.evaluate_checkpoint(loaded, unlabeled, cache_dir=tmp_path).predictions,
                                  ev.evaluate(model, normalizer, dataset).predictions)
    # evaluation runs on a channels_last copy: the caller's model keeps its layout, weights and mode
    assert model[0].weight is weight and weight.is_contiguous() and not model.training


def test_the_fast_copy_computes_what_the_model_computes(dataset):
    """Evaluation folds BatchNorm, makes ReLUs in place and goes channels_last on a copy: a net that starts with a
    pass-through and a ReLU (whose input must stay intact for the mirror pass) gives the model's own outputs."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Identity(), nn.ReLU(), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, NUM_CLASSES)).eval()
    with torch.no_grad():
        model[3].running_mean.uniform_(-1, 1)
        model[3].running_var.uniform_(0.5, 2)
    normalizer = Normalizer.fit("standardize", dataset.pixels)  # signed inputs, so the first ReLU matters
    x = normalizer(torch.from_numpy(dataset.pixels))
    expected = 0.5 * (softmax(model, x) + softmax(model, torch.flip(x, dims=[3])))
    result = ev.evaluate(model, normalizer, dataset, tta=True, batch_size=50)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    assert isinstance(model[3], nn.BatchNorm2d) and not model[1].inplace and not model[5].inplace


def test_threads_for_call_sets_the_count_inside_and_restores_it():
    from fercore.threads import set_threads, threads_for_call

    before = torch.get_num_threads()
    with threads_for_call(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with threads_for_call(None):
        assert torch.get_num_threads() == before
    assert set_threads(before) == before == torch.get_num_threads()
