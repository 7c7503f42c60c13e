"""Knowledge distillation (fercore.distillation): runs whose loss also follows trained checkpoints' answers, on real
hw3 models trained on learnable faces."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fercore import compare
from fercore.checkpoints import CheckpointError, load_model, read_checkpoint
from fercore.cli import build_parser
from fercore.config import config_argv, config_from_args
from fercore.data import load_dataset
from fercore.distillation import distillation_loss, soft_targets, teacher_probabilities
from fercore.labels import TRAINING
from fercore.runs import TEACHER_ANSWERS_FILE, copy_run
from fercore.training import TrainConfig, resume, train

from fixtures import ROOT, write_fer2013_csv

pytestmark = pytest.mark.usefixtures("one_thread")


def mirror_symmetric_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 48, 48) noise images with a bright bar across the whole width whose height encodes the class: a
    face and its mirror have the same class, as the teachers' flip-averaged answers assume."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    rng.shuffle(labels)
    pixels = rng.integers(0, 120, size=(n, 48, 48)).astype(np.uint8)
    for i, label in enumerate(labels):
        pixels[i, 3 + 6 * label:7 + 6 * label, :] = 230
    return pixels, labels


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    pixels, labels = mirror_symmetric_faces(105)
    usage = np.array([0] * 70 + [1] * 35)
    return write_fer2013_csv(tmp_path_factory.mktemp("data") / "fer2013.csv", pixels, labels, usage)


@pytest.fixture(scope="module")
def tiny_data(tiny_csv):
    return load_dataset(tiny_csv, cache=False)


def small_config(**overrides) -> TrainConfig:
    base = dict(model="hw3", epochs=8, batch_size=16, lr=3e-3, threads=1, device="cpu", seed=3, precision="fp32")
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory) -> str:
    """A hw3 trained on the faces with every label moved on by one class: it disagrees with every true label."""
    shifted = dataclasses.replace(tiny_data, labels=(tiny_data.labels + 1) % 7)
    run = tmp_path_factory.mktemp("teacher") / "run"
    train(small_config(), run, dataset=shifted)
    return str(run / "last.pt")


def training_rows(dataset) -> np.ndarray:
    return dataset.split == TRAINING


def test_with_its_whole_weight_on_the_teacher_a_run_learns_the_teachers_answers(tiny_data, teacher, tmp_path):
    faces = tiny_data.pixels[training_rows(tiny_data)]
    labels = tiny_data.labels[training_rows(tiny_data)]
    teacher_answers = load_model(teacher).predict(faces).argmax(1)
    assert (teacher_answers == (labels + 1) % 7).mean() > 0.9  # the teacher learned its shifted labels
    taught = train(small_config(teachers=[teacher], distill_weight=1.0, distill_temperature=1.0), tmp_path / "taught",
                   dataset=tiny_data)
    untaught = train(small_config(), tmp_path / "untaught", dataset=tiny_data)
    taught_answers = load_model(tmp_path / "taught" / "last.pt").predict(faces).argmax(1)
    untaught_answers = load_model(tmp_path / "untaught" / "last.pt").predict(faces).argmax(1)
    assert (taught_answers == teacher_answers).mean() > 0.8 and (taught_answers == labels).mean() < 0.2
    assert (untaught_answers == labels).mean() > 0.8
    assert "learns from 1 teacher(s) too" in taught.split_note and "teacher" not in untaught.split_note


def test_a_distilled_run_resumes_exactly_without_its_teachers(tiny_data, teacher, tmp_path):
    config = small_config(epochs=4, teachers=[teacher], augment={"flip": 0.5, "shift": 0.1})
    train(config, tmp_path / "straight", dataset=tiny_data)
    saved = np.load(tmp_path / "straight" / TEACHER_ANSWERS_FILE)
    n_train = int(training_rows(tiny_data).sum())
    assert saved.shape == (n_train, 7)
    assert np.array_equal(saved, teacher_probabilities([teacher], tiny_data.pixels[training_rows(tiny_data)]))

    train(config, tmp_path / "stopped", dataset=tiny_data, stop_after=2)
    copy_run(tmp_path / "stopped", tmp_path / "copy")  # as the Train page continues a run: the answers come along
    moved = tmp_path / "moved.pt"
    shutil.move(teacher, moved)  # the resume reads the answers the run saved, not the teacher
    try:
        resumed = resume(tmp_path / "copy", dataset=tiny_data)
    finally:
        shutil.move(moved, teacher)
    assert "teacher" not in resumed.split_note
    a = read_checkpoint(tmp_path / "straight" / "last.pt")
    b = read_checkpoint(tmp_path / "copy" / "last.pt")
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert b["config"]["teachers"] == [teacher]
    assert compare.recipe(b["config"], b["history"])["teachers"] == "run (weight 0.7, temperature 2)"
    assert "teachers" not in compare.recipe(read_checkpoint(teacher)["config"], [])


def test_a_missing_teacher_is_named_before_the_run_writes_anything(tiny_data, tmp_path):
    missing = str(tmp_path / "no-such-run")
    with pytest.raises(CheckpointError, match=re.escape("no-such-run")):
        train(small_config(teachers=[missing]), tmp_path / "run", dataset=tiny_data)
    assert not (tmp_path / "run").exists()


def test_teacher_answers_of_the_wrong_shape_or_unreadable_are_named_on_resume(tiny_data, teacher, tmp_path):
    run = tmp_path / "run"
    train(small_config(epochs=2, teachers=[teacher]), run, dataset=tiny_data, stop_after=1)
    last = (run / "last.pt").read_bytes()
    np.save(run / TEACHER_ANSWERS_FILE, np.full((3, 7), 1 / 7, dtype=np.float32))
    message = f"{TEACHER_ANSWERS_FILE}: teacher probabilities of shape (3, 7), but the run trains on 70 images"
    with pytest.raises(CheckpointError, match=re.escape(message) + ".*delete it"):
        resume(run, dataset=tiny_data)
    (run / TEACHER_ANSWERS_FILE).write_bytes(b"\x93NUMPY half a file")
    with pytest.raises(CheckpointError, match=re.escape(f"{TEACHER_ANSWERS_FILE}: unreadable") + ".*delete it"):
        resume(run, dataset=tiny_data)
    assert (run / "last.pt").read_bytes() == last  # nothing of the run was touched
    (run / TEACHER_ANSWERS_FILE).unlink()  # as the message says: the teachers compute them again
    resumed = resume(run, dataset=tiny_data)
    assert "learns from 1 teacher(s) too" in resumed.split_note and len(resumed.history) == 2


@pytest.mark.parametrize("overrides, message", [
    ({"distill_weight": 1.5}, "distill weight must be between 0 and 1"),
    ({"distill_temperature": 0.0}, "distill temperature above 0"),
    ({"teachers": "a.pt"}, "teachers must be a list of checkpoint paths"),
])
def test_bad_distillation_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**overrides).validate()


def test_teachers_go_through_the_command_line_and_back_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--out", "x", "--teachers", "a/best.pt, b", "--distill-weight", "0.5"])
    config = config_from_args(args)
    assert config.teachers == [str(tmp_path / "a" / "best.pt"), str(tmp_path / "b")] and config.distill_weight == 0.5
    again = config_from_args(build_parser().parse_args(["train", "--out", "x", *config_argv(config)]))
    assert again == config
    assert config_from_args(build_parser().parse_args(["train", "--out", "x"])).teachers == []


def test_the_distillation_loss_is_the_cross_entropy_with_the_softened_answers():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 6, 2, 2])
    one_hot = soft_targets(F.one_hot(labels, 7).float(), temperature=1.0)
    assert distillation_loss(logits, one_hot, 1.0).item() == pytest.approx(F.cross_entropy(logits, labels).item(),
                                                                           rel=1e-5)
    answers = torch.softmax(torch.randn(5, 7, generator=torch.Generator().manual_seed(1)), dim=1)
    softened = soft_targets(answers, 2.0)
    expected = F.kl_div(F.log_softmax(logits / 2, dim=1), softened, reduction="batchmean") * 4
    entropy = -(softened * softened.log()).sum(1).mean() * 4  # cross-entropy = KL divergence + the targets' entropy
    assert distillation_loss(logits, softened, 2.0).item() == pytest.approx((expected + entropy).item(), rel=1e-5)
    assert torch.allclose(softened, answers.sqrt() / answers.sqrt().sum(1, keepdim=True))  # T=2: the square root
    assert distillation_loss(logits, softened, 2.0, reduction="sum").item() == pytest.approx(
        5 * distillation_loss(logits, softened, 2.0).item(), rel=1e-6)


def test_the_command_line_says_the_teachers_answer_first_then_trains(tiny_csv, teacher, tmp_path):
    done = subprocess.run([sys.executable, "-m", "fercore", "train", "--data", str(tiny_csv), "--model", "hw3",
                           "--epochs", "1", "--batch-size", "16", "--threads", "1", "--precision", "fp32",
                           "--teachers", teacher, "--out", str(tmp_path / "run"), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"teachers: {teacher} answer for each training image first (once, minutes on a CPU)"
    assert any("learns from 1 teacher(s) too, whose answers on the 70 training images took" in line for line in lines)
    assert (tmp_path / "run" / TEACHER_ANSWERS_FILE).is_file()
