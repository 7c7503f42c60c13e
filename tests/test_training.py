"""Training: history, best/last checkpoints, exact resume, safe and atomic checkpoints."""

from __future__ import annotations

import os
import re
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from fercore import checkpoints
from fercore.checkpoints import CheckpointError, load_model, read_checkpoint, save_checkpoint
from fercore.data import load_dataset
from fercore.training import TrainConfig, learning_rate, resume, train
from fercore.transforms import AugmentConfig

from fixtures import ROOT, tiny_fer_csv

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return load_dataset(tiny_fer_csv(tmp_path_factory.mktemp("data")), cache=False)


def small_config(**overrides) -> TrainConfig:
    base = dict(model="hw3", epochs=4, batch_size=16, threads=1, device="cpu", seed=3,
                augment={"flip": 0.5, "shift": 0.1, "rotate": 5.0, "zoom": 0.1, "erase": 0.25})
    return TrainConfig(**{**base, **overrides})


def weights(run_dir):
    return read_checkpoint(run_dir / checkpoints.LAST)["model_state"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


@pytest.mark.parametrize("schedule", ["constant", "onecycle"])
def test_stopped_and_resumed_run_equals_straight_run(tiny_data, tmp_path, schedule):
    config = small_config(schedule=schedule)
    train(config, tmp_path / "straight", dataset=tiny_data)
    train(small_config(schedule=schedule), tmp_path / "stopped", dataset=tiny_data, stop_after=2)
    assert len(read_checkpoint(tmp_path / "stopped" / "last.pt")["history"]) == 2
    resume(tmp_path / "stopped", dataset=tiny_data)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "stopped"))
    straight = read_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = read_checkpoint(tmp_path / "stopped" / "last.pt")
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        assert [h[key] for h in straight["history"]] == [h[key] for h in resumed["history"]]


def test_resume_to_a_new_total_equals_training_that_long(tiny_data, tmp_path):
    """`resume DIR --epochs 4` after a finished 2-epoch run (constant lr) equals 4 epochs straight."""
    train(small_config(epochs=4), tmp_path / "four", dataset=tiny_data)
    train(small_config(epochs=2), tmp_path / "two", dataset=tiny_data)
    resume(tmp_path / "two", epochs=4, dataset=tiny_data)
    assert_same_weights(weights(tmp_path / "four"), weights(tmp_path / "two"))


def test_history_best_and_checkpoint_contents(tiny_data, tmp_path):
    trainer = train(small_config(epochs=3, augment={}), tmp_path / "run", dataset=tiny_data)
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    history = last["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for record in history:
        assert set(record) >= {"train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr"}
        assert 0 <= record["val_acc"] <= 1 and record["seconds"] > 0
    best_epoch = max(range(3), key=lambda i: (history[i]["val_acc"], -i))
    assert best["epoch"] == best_epoch + 1
    for key in ("optimizer_state", "config", "normalizer", "data_fingerprint", "precision"):
        assert key in last
    assert last["data_fingerprint"] == tiny_data.fingerprint()
    assert trainer.history[-1]["train_loss"] < trainer.history[0]["train_loss"] * 1.5
    loaded = load_model(tmp_path / "run")  # a folder means its best.pt
    assert loaded.path.endswith("best.pt") and not loaded.model.training
    logits = loaded.model(loaded.preprocess(tiny_data.pixels[:5]))
    assert logits.shape == (5, 7)


def test_training_learns_a_learnable_task(tiny_data, tmp_path):
    trainer = train(small_config(epochs=6, augment={}, lr=3e-3), tmp_path / "learn", dataset=tiny_data)
    assert max(h["val_acc"] for h in trainer.history) >= 0.6


def test_learning_rate_schedules():
    c = TrainConfig(lr=1.0, schedule="cosine")
    assert learning_rate(c, 0, 100) == pytest.approx(1.0) and learning_rate(c, 100, 100) == pytest.approx(0.0)
    c = TrainConfig(lr=1.0, schedule="onecycle")
    peak = max(learning_rate(c, s, 100) for s in range(101))
    assert learning_rate(c, 0, 100) == pytest.approx(1 / 25) and peak == pytest.approx(1.0)
    assert learning_rate(c, 100, 100) < 1e-3


# --- TrainConfig: the one block of settings -----------------------------------------------------------------

def test_every_setting_has_help_and_its_command_line_option_says_its_default():
    from dataclasses import fields

    from fercore.cli import build_parser

    train_help = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in fields(TrainConfig):
        assert f.metadata["help"], f.name
        assert f"--{f.name.replace('_', '-')}" in train_help, f.name
        for choice in f.metadata.get("choices") or ():
            assert choice in train_help, (f.name, choice)
    assert "(default: 0.001)" in train_help and "(default: scale255)" in train_help


def test_command_line_defaults_are_the_configs_defaults():
    from fercore.cli import build_parser
    from fercore.config import config_from_args

    parsed = config_from_args(build_parser().parse_args(["train", "--out", "x"]))
    assert parsed == TrainConfig(augment=AugmentConfig().to_dict())
    assert AugmentConfig.from_dict(TrainConfig().augment) == AugmentConfig()


@pytest.mark.parametrize("field, value, message", [
    ("schedule", "linear", "unknown schedule 'linear': choose one of constant, cosine, onecycle"),
    ("balance", "oversample", "unknown balance 'oversample'"),
    ("normalize", "zscore", "unknown normalize 'zscore'"),
    ("precision", "fp16", "unknown precision 'fp16': choose one of auto, fp32, bf16"),
    ("device", "tpu", "unknown device 'tpu'"),
    ("model", "resnet9000", "resnet9000"),
    ("augment", {"wobble": 3}, "wobble"),
])
def test_a_bad_setting_is_named_with_its_allowed_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**{field: value}).validate()
    TrainConfig(device="cuda:1").validate()  # a numbered GPU is a device too


def test_recipes_are_valid_configs_and_the_shipped_fernet_wide_is_the_accurate_recipe_in_bf16():
    from fercore.config import RECIPES
    from fercore.runs import run_config, run_history

    for recipe in RECIPES.values():
        for precision in ("fp32", "bf16"):
            recipe.in_precision(precision).config().validate()
    folder = ROOT / "checkpoints" / "fernet_wide"
    shipped = TrainConfig.from_dict(run_config(folder))
    assert shipped.precision == "auto" and {h["precision"] for h in run_history(folder)} == {"bf16"}
    accurate = RECIPES["accurate"].in_precision("bf16").config(data=shipped.data, threads=shipped.threads,
                                                               seed=shipped.seed)
    for name in ("model", "epochs", "batch_size", "lr", "weight_decay", "schedule", "label_smoothing", "normalize",
                 "balance", "augment"):
        assert getattr(accurate, name) == getattr(shipped, name), name
    homework = RECIPES["homework"].config()
    assert (homework.model, homework.epochs, homework.lr, homework.schedule) == ("hw3", 250, 1e-3, "constant")
    assert AugmentConfig.from_dict(homework.augment) == AugmentConfig.homework()


def test_starting_over_an_existing_run_is_refused(tiny_data, tmp_path):
    train(small_config(epochs=1), tmp_path / "run", dataset=tiny_data)
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(small_config(epochs=1), tmp_path / "run", dataset=tiny_data)


# --- checkpoint safety -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("good") / "run"
    train(small_config(epochs=1, augment={}), run, dataset=tiny_data)
    return run


def test_truncated_checkpoint_is_a_clear_error(good_run, tmp_path):
    data = (good_run / "last.pt").read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_model(bad)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="not a fercore checkpoint"):
        load_model(path)


def test_wrong_architecture_is_refused(good_run, tmp_path):
    state = read_checkpoint(good_run / "last.pt")
    state["model_state"] = {k: v for k, v in list(state["model_state"].items())[:-2]}
    path = tmp_path / "wrong.pt"
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="do not fit architecture"):
        load_model(path)


def test_checkpoint_of_another_model_definition_is_refused(good_run, tmp_path):
    """Same weight shapes, other layers (e.g. a stride changed): refuse rather than compute garbage."""
    state = read_checkpoint(good_run / "last.pt")
    assert state["architecture"] == checkpoints.architecture_signature(load_model(good_run).model)
    state["architecture"] = "0" * 16
    path = tmp_path / "redefined.pt"
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="another definition"):
        load_model(path)


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['FERCORE_PWNED']}",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("FERCORE_PWNED", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoints.FORMAT, "model_state": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="not a safe fercore checkpoint"):
        load_model(path)
    assert not marker.exists()
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(RunsCode(), f)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_failed_write_keeps_the_previous_checkpoint(good_run, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    path.write_bytes((good_run / "last.pt").read_bytes())
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint({"epoch": 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_checkpoint_survives_sigkill_during_saves(tmp_path):
    """Kill a process that keeps rewriting a checkpoint at random moments: the file is always a whole one."""
    path = tmp_path / "ckpt.pt"
    script = textwrap.dedent(f"""
        import torch, itertools
        from fercore.checkpoints import save_checkpoint
        for i in itertools.count():
            save_checkpoint({{"epoch": i, "w": torch.full((1_000_000,), float(i))}}, {str(path)!r})
            print(i, flush=True)
    """)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        child.stdout.readline()  # at least one save finished
        delay = 0.02 + 0.2 * torch.rand(1, generator=generator).item()
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.kill()
        child.wait()
        state = read_checkpoint(path)
        assert torch.equal(state["w"], torch.full((1_000_000,), float(state["epoch"])))


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")])
def test_a_run_that_cannot_write_its_checkpoint_stops_with_one_line_and_keeps_the_last_good_one(
        tmp_path, monkeypatch, capsys, failure):
    from fercore import cli

    data, run = tiny_fer_csv(tmp_path), tmp_path / "run"
    real_save, saves = torch.save, []

    def save_then_fail(obj, f, *args, **kwargs):  # epoch 1 writes its snapshot, last.pt and best.pt; then the disk fails
        saves.append(obj.get("epoch"))
        if len(saves) > 3:
            f.write(b"partial")
            raise failure
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fail)
    status = cli.main(["train", "--data", str(data), "--out", str(run), "--model", "fernet", "--epochs", "3",
                       "--batch-size", "32", "--threads", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert status == 2 and err.count("\n") == 1 and failure.strerror in err and "epoch_0002.pt" in err, err
    assert "epoch 1/3" in out and saves[3:] == [2]  # epoch 2 trained; its first save failed, and training stopped
    monkeypatch.setattr(torch, "save", real_save)
    assert len(read_checkpoint(run / "last.pt")["history"]) == 1  # the previous checkpoint, intact
    assert not [p.name for p in run.rglob("*.tmp")]
