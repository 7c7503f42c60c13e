"""Every malformed input of the corpus (tests/bad_inputs.py) through the command line and the app: one readable
line and exit status 2 from the CLI, a red box and a page that still works in the app, no file changed, no code run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from bad_inputs import MARKER, checkpoint_corpus, data_corpus, run_name_corpus, snapshot
from fercore import cli, jobs
from fercore.checkpoints import LAST, save_checkpoint
from fercore.data import load_dataset
from fercore.labels import PRIVATE_TEST, PUBLIC_TEST
from fercore.training import TrainConfig, Trainer
from fixtures import ROOT, learnable_faces
from ui import keys, nav

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    pixels, labels = learnable_faces(70, seed=2)
    good_data = root / "good.npz"
    np.savez(good_data, pixels=pixels, emotion=labels.astype(np.uint8),
             usage=np.array([PUBLIC_TEST] * 35 + [PRIVATE_TEST] * 35, np.uint8))
    good_run = root / "checkpoints" / "good"  # a real fernet checkpoint (initial weights, saved by the Trainer)
    trainer = Trainer(good_run, TrainConfig(model="fernet", epochs=1, threads=1), dataset=load_dataset(good_data))
    good_run.mkdir(parents=True)
    save_checkpoint(trainer.state(), good_run / LAST)
    cases = (data_corpus(root / "data") + checkpoint_corpus(root / "checkpoints", good_run / LAST)
             + run_name_corpus())
    return {"root": root, "cases": cases, "data": good_data, "checkpoint": good_run, "before": snapshot([root])}


def of_kind(corpus, kind: str):
    return [case for case in corpus["cases"] if case.kind == kind]


def test_the_corpus_covers_every_reader_the_checkpoint_loader_and_run_names(corpus):
    kinds = [case.kind for case in corpus["cases"]]
    assert len(kinds) >= 25 and {"data", "checkpoint", "run name"} <= set(kinds)
    targets = {Path(case.target).suffix for case in corpus["cases"] if case.kind == "data"}
    assert {".csv", ".npz", ""} <= targets  # CSV files, npz archives and folders


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI in this process; it must exit 2 with exactly one line on stderr and nothing on stdout."""
    status = cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, status, out, err)
    assert "Traceback" not in err and not out.strip(), err
    return err


def test_the_cli_refuses_each_bad_input_in_one_line(corpus, capsys, tmp_path):
    for case in of_kind(corpus, "data"):
        err = cli_error(capsys, ["evaluate", str(corpus["checkpoint"]), "--data", case.target])
        assert case.words in err and Path(case.target).name in err, (case.name, err)
        out = tmp_path / case.name.replace(" ", "_")
        cli_error(capsys, ["train", "--data", case.target, "--out", str(out), "--epochs", "1"])
        assert not out.exists(), case.name  # a refused run leaves no folder behind
    for case in of_kind(corpus, "checkpoint"):
        err = cli_error(capsys, ["evaluate", case.target, "--data", str(corpus["data"])])
        assert case.words in err and Path(case.target).name in err, (case.name, err)
        cli_error(capsys, ["resume", case.target])


def test_run_names_that_could_escape_the_runs_folder_are_refused(corpus, tmp_path):
    for case in of_kind(corpus, "run name"):
        with pytest.raises(jobs.JobError, match=case.words):
            jobs.safe_run_dir(tmp_path, case.target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["pixel abc", "hostile pickle", "truncated checkpoint"])
def test_a_real_cli_process_prints_one_line_and_no_traceback(corpus, name):
    case = next(c for c in corpus["cases"] if c.name == name)
    argv = (["evaluate", str(corpus["checkpoint"]), "--data", case.target] if case.kind == "data"
            else ["evaluate", case.target, "--data", str(corpus["data"])])
    done = subprocess.run([sys.executable, "-m", "fercore", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert case.words in done.stderr


def open_dashboard(corpus, monkeypatch) -> AppTest:
    """The app on the corpus' good data and checkpoint, with its checkpoints and runs folders inside the corpus."""
    monkeypatch.setenv("FERCORE_CHECKPOINTS", str(corpus["root"] / "checkpoints"))
    monkeypatch.setenv("FERCORE_RUNS", str(corpus["root"] / "runs"))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=90)
    at.session_state[keys.DATA_MODE] = "path"
    at.session_state[keys.DATA_PATH] = str(corpus["data"])
    at.session_state[keys.CHECKPOINT] = str(corpus["checkpoint"])
    at.run()
    return at


def test_the_app_shows_each_error_and_the_page_stays_usable(corpus, monkeypatch):
    at = open_dashboard(corpus, monkeypatch)
    assert not at.exception and not at.error and len(at.get("plotly_chart")) == 1

    def assert_shows(case) -> None:
        assert not at.exception, (case.name, at.exception)
        errors = [e.value for e in at.error]
        assert any(case.words in e and Path(case.target).name in e for e in errors), (case.name, errors)
        assert not at.get("plotly_chart"), case.name

    def assert_usable() -> None:
        assert not at.exception and not at.error and len(at.get("plotly_chart")) == 1

    for case in of_kind(corpus, "data"):
        at.text_input(key=keys.DATA_PATH).set_value(case.target).run()
        assert_shows(case)
        at.text_input(key=keys.DATA_PATH).set_value(str(corpus["data"])).run()
        assert_usable()
    for case in of_kind(corpus, "checkpoint"):
        if Path(case.target).is_dir():
            continue  # a folder without a checkpoint is not offered in the sidebar at all
        at.selectbox(key=keys.CHECKPOINT).set_value(case.target).run()
        assert_shows(case)
        at.selectbox(key=keys.CHECKPOINT).set_value(str(corpus["checkpoint"])).run()
        assert_usable()


def test_the_train_page_refuses_bad_run_names(corpus, monkeypatch):
    runs = corpus["root"] / "runs"
    at = open_dashboard(corpus, monkeypatch)
    at.switch_page(nav.TRAIN).run()
    for case in of_kind(corpus, "run name"):
        at.text_input(key="w_train_name").set_value(case.target)
        at.button(key="FormSubmitter:new_run-Start training").click().run()
        assert not at.exception and any(case.words in e.value for e in at.error), case.name
    assert not runs.exists() or not any(runs.iterdir())
    assert not (corpus["root"] / "escape").exists() and not Path("/etc/cron.d/x").exists()


def test_no_input_was_modified_and_no_code_ran(corpus):
    # Runs last in this module: every load above was refused without touching a byte of its input.
    assert snapshot([corpus["root"] / "data", corpus["root"] / "checkpoints", corpus["data"]]) == {
        path: value for path, value in corpus["before"].items() if "/runs/" not in path}
    assert not list(corpus["root"].rglob(MARKER)) and not (ROOT / MARKER).exists()
