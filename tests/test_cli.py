"""`python -m fercore` end to end, as a user runs it: real processes, real files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from fixtures import ROOT, learnable_faces, tiny_fer_csv, write_course_test_csv


def fercore(*args, check=True, timeout=300):
    result = subprocess.run([sys.executable, "-m", "fercore", *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    data = tiny_fer_csv(folder)
    run = folder / "run"
    out = fercore("train", "--data", data, "--model", "hw3", "--epochs", 2, "--out", run, "--batch-size", 16,
                  "--augment", "flip=0.5,shift=0.1", "--seed", 1, "--threads", 1, "--quiet")
    return data, run, out.stdout


def test_help_on_every_command():
    for command in ("train", "resume", "evaluate", "predict", "models"):
        out = fercore(command, "--help").stdout
        assert "usage: python -m fercore" in out and command in out


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`python -m fercore models | head -1`: the reader has gone when fercore writes, and fercore stops quietly."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left: every write to the pipe fails with EPIPE
    try:
        result = subprocess.run([sys.executable, "-m", "fercore", "models"], cwd=ROOT, stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == "", result.stderr


def test_train_writes_a_run_folder_and_prints_epochs(trained_run):
    _, run, stdout = trained_run
    assert {"last.pt", "best.pt", "history.json", "config.json", "progress.json"} <= {p.name for p in run.iterdir()}
    assert "epoch 1/2" in stdout and "epoch 2/2" in stdout and "training on Training (70)" in stdout
    assert len(json.loads((run / "history.json").read_text())) == 2


def test_train_says_its_precision_and_why_on_its_first_line(trained_run):
    from fercore.precision import choose_precision
    from fercore.training import pick_device

    _, run, stdout = trained_run
    assert stdout.splitlines()[0] == choose_precision("auto", pick_device("auto")).describe()
    assert json.loads((run / "config.json").read_text())["precision"] == "auto"


def test_evaluate_in_bf16_is_close_to_fp32(trained_run):
    data, run, _ = trained_run
    fp32, bf16 = (json.loads(fercore("evaluate", run, "--data", data, "--split", "PublicTest", "--json",
                                     "--precision", p).stdout) for p in ("fp32", "bf16"))
    assert (fp32["computed_in"], bf16["computed_in"]) == ("fp32", "bf16")
    assert abs(fp32["accuracy"] - bf16["accuracy"]) <= 2 / 35  # a face or two near a tie may flip
    assert fercore("evaluate", run, "--data", data, "--split", "PublicTest").stdout.startswith("precision: ")


def test_evaluate_json_matches_the_labels(trained_run):
    data, run, _ = trained_run
    result = json.loads(fercore("evaluate", run, "--data", data, "--split", "PublicTest", "--json").stdout)
    confusion = np.array(result["confusion"])
    assert confusion.shape == (7, 7) and confusion.sum() == result["n"] == 35
    assert result["accuracy"] == pytest.approx(np.trace(confusion) / 35)
    text = fercore("evaluate", run / "last.pt", "--data", data, "--split", "PublicTest").stdout
    assert "accuracy" in text and "Disgust" in text and "confusion" in text


def test_resume_to_more_epochs(trained_run, tmp_path):
    data, run, _ = trained_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("last.pt", "best.pt", "config.json", "history.json"):
        (copy / name).write_bytes((run / name).read_bytes())
    out = fercore("resume", copy, "--epochs", 3, "--threads", 1, "--precision", "fp32", "--quiet").stdout
    assert out.startswith("precision: fp32 (asked for)\n") and "resuming" in out and "epoch 3/3" in out
    assert len(json.loads((copy / "history.json").read_text())) == 3
    assert "already has 3 of 3" in fercore("resume", copy, "--quiet").stdout


def test_predict_writes_the_course_submission(trained_run, tmp_path):
    _, run, _ = trained_run
    pixels, _ = learnable_faces(9, seed=5)
    test_csv = write_course_test_csv(tmp_path / "test.csv", pixels)
    out = tmp_path / "submission.csv"
    fercore("predict", run, "--data", test_csv, "--out", out)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "label"] and len(rows) == 10
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(9)]
    assert all(0 <= int(r[1]) <= 6 for r in rows[1:])


@pytest.mark.parametrize("args, message", [
    (["evaluate", "no/such/run"], "does not exist"),
    (["train", "--model", "resnet9000", "--out", "x", "--epochs", "1"], "resnet9000"),
    (["train", "--augment", "wobble=3", "--out", "x"], "wobble"),
    (["train", "--precision", "fp16", "--out", "x"], "unknown precision 'fp16': choose one of auto, fp32, bf16"),
    (["train", "--schedule", "linear", "--out", "x"], "unknown schedule 'linear'"),
])
def test_user_errors_are_one_line_without_traceback(args, message, tmp_path):
    result = fercore(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_data_file_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    result = fercore("train", "--data", bad, "--out", tmp_path / "run", "--epochs", 1, check=False)
    assert result.returncode == 2 and "bad.csv" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()
