"""Training on several processes: a real two-process gloo run (torchrun) on the CPU against one process, exact
resume on the same world size, and what only rank 0 may do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fercore import distributed
from fercore.checkpoints import read_checkpoint
from fercore.data import load_dataset
from fercore.models import build_model
from fercore.runs import copy_run
from fercore.training import TrainConfig, new_run, resumed_run

from fixtures import ROOT, tiny_fer_csv
from numerics import EPS32, fp32_tolerance

pytestmark = pytest.mark.usefixtures("one_thread")

# hw3_nobn: no BatchNorm, whose per-process statistics would make the two runs differ by more than rounding (the
# CPU has no SyncBatchNorm); its dropout draws the same masks on any number of processes (distributed.ShardedDropout).
# fp32: the tolerances below are fp32's (on a CPU with native bf16, auto would train in bf16)
SETTINGS = ["--model", "hw3_nobn", "--batch-size", "64", "--threads", "1", "--device", "cpu", "--seed", "3",
            "--precision", "fp32", "--augment", "flip=0.5,shift=0.1", "--quiet"]
LR = 1e-3  # TrainConfig's default, which SETTINGS keep
ADAM_EPS = 1e-8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_fer_csv(tmp_path_factory.mktemp("data"), n_train=64, n_val=16)  # one batch of 64: one step an epoch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, digests: Path) -> str:
    """`python -m torch.distributed.run --nproc_per_node=2 -m fercore ARGS` on the loopback, one thread a rank;
    each rank writes the digest of its final weights into `digests`. Returns the output."""
    digests.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", distributed.WEIGHT_DIGEST_DIR: str(digests)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master-addr=127.0.0.1",
               f"--master-port={free_port()}", "-m", "fercore", *map(str, args)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rank_digests(folder: Path) -> list[str]:
    return [(folder / f"rank{rank}.sha256").read_text().strip() for rank in (0, 1)]


@pytest.fixture(scope="module")
def stopped(data, tmp_path_factory) -> tuple[Path, str]:
    """A two-process run of 2 epochs stopped after the first (one step), and what it printed."""
    folder = tmp_path_factory.mktemp("stopped")
    out = torchrun("train", "--data", data, "--epochs", "2", "--stop-after", "1", "--out", folder / "run", *SETTINGS,
                   digests=folder / "digests")
    return folder, out


def test_two_processes_agree_write_once_and_match_one_process(data, stopped, tmp_path):
    folder, out = stopped
    # both ranks end with the weights rank 0 saved; rank 0 alone speaks
    saved = read_checkpoint(folder / "run" / "last.pt")
    assert rank_digests(folder / "digests") == [distributed.weights_digest(saved["model_state"])] * 2
    assert out.count("done:") == 1 and out.count("epoch 1/2") == 1 and "x 2 processes (global batch 64, 32 each)" in out
    assert saved["world_size"] == 2

    # One process, the same global batch of 64, one Adam step.
    config = TrainConfig(model="hw3_nobn", epochs=2, batch_size=64, threads=1, device="cpu", seed=3, precision="fp32",
                         augment={"flip": 0.5, "shift": 0.1}, data=str(data))
    single = new_run(config, tmp_path / "single", dataset=load_dataset(data, cache=False))
    single.fit(stop_after=1)
    assert single.world.size == 1 and single.state()["world_size"] == 1
    names = [name for name, _ in build_model("hw3_nobn").named_parameters()]
    ddp_moments, one_moments = saved["optimizer_state"]["state"], single.optimizer.state_dict()["state"]
    # The gradients (Adam's first moment after one step is 0.1 g) differ only by the order of their float sums: DDP
    # adds two ranks' sums over 32 images where one backward pass sums 64. Each element sums about
    # batch x sum(fan-ins) products, so they agree to eps * sqrt(that) of the largest (1.4e-4 here).
    tolerance = fp32_tolerance(single.model, points=64)
    for index, name in enumerate(names):
        g_ddp, g_one = ddp_moments[index]["exp_avg"] / 0.1, one_moments[index]["exp_avg"] / 0.1
        assert (g_ddp - g_one).abs().max() <= tolerance * g_one.abs().max(), name
        # Adam's first step moves each weight by lr * g / (|g| + eps), which changes by at most
        # lr * 2 |dg| / (max |g| + eps) when g does: where a gradient is near zero its rounding can turn the step
        # around, which is why later steps drift apart (by up to 2 lr a step) and the comparison is of one step.
        w_ddp, w_one = saved["model_state"][name], single.model.state_dict()[name]
        step_change = 2 * LR * (g_ddp - g_one).abs() / (torch.maximum(g_ddp.abs(), g_one.abs()) + ADAM_EPS)
        # plus the rounding of w - lr * step, of the size of the larger operand (at most |w| + lr)
        rounding = 2 * EPS32 * (w_one.abs() + LR)
        assert ((w_ddp - w_one).abs() <= step_change.clamp(max=2 * LR) + rounding).all(), name
    assert saved["history"][0]["train_loss"] == pytest.approx(single.history[0]["train_loss"], rel=1e-5)


def test_two_process_resume_is_exact_and_a_new_world_size_is_noted(data, stopped, tmp_path):
    """Stopped after epoch 1 and resumed on two processes: bit-identical to two epochs straight on two."""
    run = tmp_path / "resumed"
    copy_run(stopped[0] / "run", run)
    torchrun("train", "--data", data, "--epochs", "2", "--out", tmp_path / "straight", *SETTINGS,
             digests=tmp_path / "straight-digests")
    out = torchrun("resume", run, "--quiet", digests=tmp_path / "resumed-digests")
    assert "resuming" in out and "process(es) so far" not in out
    assert rank_digests(tmp_path / "resumed-digests") == rank_digests(tmp_path / "straight-digests")
    a, b = read_checkpoint(tmp_path / "straight" / "last.pt"), read_checkpoint(run / "last.pt")
    assert distributed.weights_digest(a["model_state"]) == distributed.weights_digest(b["model_state"])
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    # on one process the run goes on, and says that the split over processes changed (the CLI's first line)
    trainer = resumed_run(run, epochs=3, dataset=load_dataset(data, cache=False))
    assert "trained on 2 process(es) so far, continuing on 1" in trainer.split_note


def test_a_distilled_two_process_run_shares_the_teachers_term_as_one_process_has_it(data, stopped, tmp_path):
    """With teachers (fercore.distillation) each rank adds its rows' part of the teachers' term: the two processes'
    loss is one process's, and differs from the same run's without teachers."""
    teacher = str(stopped[0] / "run" / "last.pt")
    torchrun("train", "--data", data, "--epochs", "1", "--out", tmp_path / "run", "--teachers", teacher, *SETTINGS,
             digests=tmp_path / "digests")
    two = read_checkpoint(tmp_path / "run" / "last.pt")
    config = TrainConfig(model="hw3_nobn", epochs=1, batch_size=64, threads=1, device="cpu", seed=3, precision="fp32",
                         augment={"flip": 0.5, "shift": 0.1}, data=str(data), teachers=[teacher])
    single = new_run(config, tmp_path / "single", dataset=load_dataset(data, cache=False))
    single.fit()
    assert two["history"][0]["train_loss"] == pytest.approx(single.history[0]["train_loss"], rel=1e-5)
    untaught = read_checkpoint(stopped[0] / "run" / "last.pt")["history"][0]["train_loss"]
    assert abs(two["history"][0]["train_loss"] - untaught) > 1e-3 * untaught


def test_a_rank_other_than_0_trains_but_writes_nothing(data, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    # no process group (so no DDP, and each collective is skipped): the rest runs as on rank 1
    monkeypatch.setattr(distributed, "init", lambda world, device: None)
    monkeypatch.setattr(distributed, "training_view", lambda model, *args: model)
    config = TrainConfig(model="hw3_nobn", epochs=1, batch_size=64, threads=1, device="cpu", data=str(data))
    trainer = new_run(config, tmp_path / "rank1", dataset=load_dataset(data, cache=False))
    trainer.fit()
    assert len(trainer.history) == 1 and not (tmp_path / "rank1").exists()


@pytest.mark.parametrize("n, size", [(64, 2), (7, 3), (5, 4), (3, 2)])
def test_the_ranks_rows_are_the_batch_in_order(n, size):
    rows = [np.arange(n)[distributed.World(rank=r, size=size).rows(n)] for r in range(size)]
    assert np.array_equal(np.concatenate(rows), np.arange(n)) and max(map(len, rows)) - min(map(len, rows)) <= 1


def test_a_batch_size_the_processes_cannot_share_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="batch size 30 does not split over 4 processes"):
        distributed.check_batch_size(30, distributed.World(size=4))
    with pytest.raises(ValueError, match="last batch holds 1 of the 65 training images, fewer than the 2"):
        distributed.check_last_batch(65, 64, distributed.World(size=2))
    with pytest.raises(ValueError, match="--sync-batchnorm needs CUDA"):
        distributed.training_view(build_model("hw3"), distributed.World(size=2), torch.device("cpu"), {}, True)


def test_a_job_on_several_gpus_runs_its_config_under_torchrun(tmp_path):
    """fercore.jobs' command for N processes is torchrun's, on this machine, around the one-process command."""
    from torch.distributed.run import get_args_parser

    from fercore import jobs
    from fercore.cli import build_parser
    from fercore.config import config_argv, config_from_args, parse_augment

    config = TrainConfig(model="fernet", epochs=3, batch_size=256, sync_batchnorm=True,
                         augment=parse_augment("flip=0.5"), data=str(tmp_path / "x.npz"))
    args = [*config_argv(config), "--out", str(tmp_path / "run")]
    assert jobs.command_line("train", args) == [sys.executable, "-m", "fercore", "train", *args, "--quiet"]
    command = jobs.command_line("train", args, processes=4)
    assert command[:2] == [sys.executable, "-m"]
    launcher = get_args_parser().parse_args(command[3:])
    assert (launcher.nproc_per_node, launcher.standalone, launcher.module, launcher.training_script) == \
        ("4", True, True, "fercore")
    assert config_from_args(build_parser().parse_args(launcher.training_script_args[:-1])) == config


def test_the_train_form_asks_for_gpus_only_where_there_are_several(monkeypatch):
    from ui import train_form

    for gpus, offered in [(0, []), (1, []), (4, [1, 2, 3, 4])]:
        monkeypatch.setattr(distributed, "cuda_device_count", lambda: gpus)
        assert train_form.process_choices() == offered
