"""Background training jobs: one per run folder, stoppable, and no stale lock after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from fercore import jobs
from fercore.config import TrainConfig, config_argv, config_from_args
from fercore.cli import build_parser

from fixtures import ROOT, tiny_fer_csv, wait_until


@pytest.fixture
def data(tmp_path):
    return tiny_fer_csv(tmp_path, n_train=210, n_val=35)


def train_args(data, epochs=50):
    return TrainConfig(data=str(data), epochs=epochs, batch_size=16, model="hw3")


def test_start_status_refuse_second_and_stop(tmp_path, data):
    run = tmp_path / "runs" / "demo"
    pid = jobs.start_training(run, train_args(data))
    try:
        assert jobs.is_running(run)
        # niced below the app, so a click wins the cores; torch's threads inherit it
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + jobs.JOB_NICENESS
        with pytest.raises(jobs.JobError, match="already training"):
            jobs.start_training(run, train_args(data))
        assert wait_until(lambda: jobs.status(run).progress.get("batch", 0) > 0), jobs.status(run).log_tail
        status = jobs.status(run)
        assert status.running and status.progress["epochs"] == 50 and status.progress["eta_s"] > 0
    finally:
        assert jobs.stop(run)
    assert not jobs.is_running(run) and not jobs.any_running(tmp_path / "runs")


def test_two_simultaneous_starts_run_exactly_one(tmp_path, data):
    run = tmp_path / "race"

    def start(_):
        try:
            return jobs.start_training(run, train_args(data))
        except jobs.JobError:
            return None

    with ThreadPoolExecutor(8) as pool:
        pids = [pid for pid in pool.map(start, range(8)) if pid]
    try:
        assert len(pids) == 1
    finally:
        jobs.stop(run)


def test_lock_of_a_killed_trainer_is_recovered(tmp_path, data):
    run = tmp_path / "killed"
    pid = jobs.start_training(run, train_args(data))
    os.killpg(pid, signal.SIGKILL)
    assert wait_until(lambda: not jobs.is_running(run), timeout=10)
    assert (run / jobs.LOCK_FILE).exists()  # the lock file stays, but nobody holds it
    assert jobs.start_training(run, train_args(data)) > 0
    assert jobs.is_running(run)
    jobs.stop(run)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65, "run name", "..", "/abs"])
def test_unsafe_run_names_are_refused(tmp_path, name):
    with pytest.raises(jobs.JobError, match="not allowed"):
        jobs.safe_run_dir(tmp_path, name)


def test_safe_run_name_stays_inside_root(tmp_path):
    assert jobs.safe_run_dir(tmp_path, "hw3-demo_1.2") == tmp_path / "hw3-demo_1.2"


def test_jobs_and_run_files_load_without_torch():
    """The Train page lists, starts and follows runs before torch loads; only the child process needs it."""
    check = "import sys, fercore.jobs, fercore.runs, ui.train_form; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)


def test_a_job_runs_exactly_the_config_it_was_given(tmp_path, data):
    """The job's command line is built from the config, and parses back to the same config."""
    config = TrainConfig(model="fernet", epochs=7, batch_size=24, lr=3e-3, weight_decay=1e-4, schedule="onecycle",
                         label_smoothing=0.1, normalize="per_image", balance="sampler", seed=5, precision="fp32",
                         augment={"flip": 0.5, "shift": 0.1, "rotate": 0.0, "zoom": 0.0, "erase": 0.25},
                         data=str(data), val_fraction=0.2, threads=1)
    parsed = config_from_args(build_parser().parse_args(["train", *config_argv(config), "--out", "x"]))
    assert parsed == config
    run = tmp_path / "exact"
    jobs.start_training(run, config)
    try:
        assert wait_until(lambda: (run / "config.json").exists()), jobs.status(run).log_tail
    finally:
        jobs.stop(run)
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == config
    command = next(line for line in (run / jobs.LOG_FILE).read_text().splitlines() if line.startswith("$ "))
    assert command.count("--threads") == 1 and "--threads 1" in command
