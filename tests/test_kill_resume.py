"""A training process killed with SIGKILL again and again, at seeded random moments, and resumed each time, ends with
exactly the weights of a run that was never killed.

The kill moments are set by the run's own progress, not by the clock, so they land in the same phases on a slow
CPU and on one five times faster: the uninterrupted run first measures how long this machine takes to start
(imports, data, model) and to train, validate and save one epoch, and each kill then waits for an event of the
killed process (its 'training on' / 'resuming' line, its epoch lines) plus a seeded random share of the next
phase's measured duration."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
import time

import torch

from fercore.checkpoints import read_checkpoint
from fercore.runs import LAST
from fixtures import ROOT, tiny_fer_csv

KILLS, EPOCHS = 12, 24
TRAIN_ARGS = ["--model", "fernet", "--epochs", str(EPOCHS), "--batch-size", "16", "--schedule", "onecycle",
              "--lr", "3e-3", "--augment", "flip=0.5,shift=0.1,rotate=5,erase=0.25", "--seed", "7", "--threads", "1",
              "--device", "cpu", "--quiet"]
# What cli.py prints once the model is built, before the first batch; and after each epoch and its saves.
STARTED, EPOCH_DONE = re.compile(r"(training on|resuming) "), re.compile(r"epoch \d+/\d+  train loss")
STARTUP_SHARE = 0.25  # of the kills come while the process starts; the others while it trains and saves


class Fercore:
    """`python -m fercore ...` in a child process, its output lines kept with the time each was printed."""

    def __init__(self, *args: str):
        self.started = time.monotonic()
        self.child = subprocess.Popen([sys.executable, "-m", "fercore", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []  # (seconds since start, line)
        self._changed = threading.Condition()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.child.stdout:
            with self._changed:
                self.lines.append((time.monotonic() - self.started, line))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def times(self, pattern: re.Pattern) -> list[float]:
        """When each line matching `pattern` (at its start) was printed."""
        return [t for t, line in list(self.lines) if pattern.match(line)]

    def wait_for(self, pattern: re.Pattern, count: int = 1, timeout: float = 600) -> bool:
        """Wait until `count` lines matching `pattern` were printed; False if the process ended or time ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.times(pattern)) >= count or self._ended, timeout) \
                and len(self.times(pattern)) >= count

    def finish(self, timeout: float = 600) -> int:
        status = self.child.wait(timeout=timeout)
        with self._changed:
            self._changed.wait_for(lambda: self._ended, 10)
        return status

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)


def machine_pace(straight: Fercore) -> tuple[float, list[float]]:
    """(seconds to start, seconds after the start line at which epoch 0, 1, 2, ... had ended with its saves),
    measured on an uninterrupted run on this machine. Each epoch has its own duration: a process's first is the
    slowest (oneDNN builds its kernels then)."""
    (ready,) = straight.times(STARTED)
    epoch_ends = straight.times(EPOCH_DONE)
    assert len(epoch_ends) == EPOCHS, straight.output
    return ready, [0.0] + [t - ready for t in epoch_ends]


def epochs_done(run) -> int:
    return len(read_checkpoint(run / LAST)["history"]) if (run / LAST).exists() else 0


def kill_plan(rng: random.Random) -> list[tuple[str, float]]:
    """For each kill: ("start-up", share of the start-up time) or ("training", how many epochs into the process's
    training: 0 to 1.5, so through its first epoch, its validation, its two saves, and into the next)."""
    return [("start-up", rng.uniform(0.05, 0.9)) if rng.random() < STARTUP_SHARE else ("training", rng.uniform(0, 1.5))
            for _ in range(KILLS)]


def test_sigkill_at_random_moments_then_resume_gives_the_weights_of_an_unkilled_run(tmp_path):
    data = str(tiny_fer_csv(tmp_path, n_train=48, n_val=16))
    straight = Fercore("train", "--data", data, "--out", str(tmp_path / "straight"), *TRAIN_ARGS)
    assert straight.finish() == 0, straight.output
    startup_s, clock = machine_pace(straight)

    plan = kill_plan(random.Random(2026))
    # Each kill costs at most the epochs it waits for plus the one it interrupts, however fast the machine, so
    # all of them land before the run ends.
    assert sum(int(share) + 1 for phase, share in plan if phase == "training") < EPOCHS, plan
    assert {phase for phase, _ in plan} == {"start-up", "training"}, plan

    run, log = tmp_path / "killed", []
    for phase, share in plan:
        before = epochs_done(run)
        # No checkpoint yet: start again; otherwise resume from the last good one.
        child = Fercore("resume", str(run), "--quiet") if before else Fercore("train", "--data", data, "--out",
                                                                              str(run), *TRAIN_ARGS)
        if phase == "start-up":  # a share of the shortest start-up seen, and at the latest when training begins
            child.wait_for(STARTED, timeout=share * startup_s)
        else:  # whole epochs by the process's own epoch lines, the share of the next one by the measured clock
            whole = int(share)  # (and at the latest when that one is saved, however much faster it runs)
            assert child.wait_for(STARTED) and (whole == 0 or child.wait_for(EPOCH_DONE, whole)), child.output
            child.wait_for(EPOCH_DONE, whole + 1, timeout=(share - whole) * (clock[whole + 1] - clock[whole]))
        assert child.child.poll() is None, f"finished before its kill ({phase}, {share:.2f}): {child.output}"
        child.child.kill()  # SIGKILL: no handler, no cleanup
        child.finish()
        started = child.times(STARTED)
        startup_s = min([startup_s, *started])  # the machine's load changes: keep start-up kills in the start-up
        landed = "training" if started else "start-up"
        after = epochs_done(run)  # the checkpoint left behind reads, and never goes back
        assert after >= before
        log.append((landed, round(share, 2), before, after))

    assert {landed for landed, *_ in log} == {"start-up", "training"}, log  # kills landed in both phases
    assert any(after > before for *_, before, after in log), log  # some kills came after progress was saved
    final = Fercore("resume", str(run), "--quiet")
    assert final.finish() == 0, final.output
    killed, unkilled = read_checkpoint(run / LAST), read_checkpoint(tmp_path / "straight" / LAST)
    assert len(killed["history"]) == len(unkilled["history"]) == EPOCHS
    for key, value in unkilled["model_state"].items():
        assert torch.equal(killed["model_state"][key], value), f"{key} differs after {KILLS} kills: {log}"
    assert [h["val_acc"] for h in killed["history"]] == [h["val_acc"] for h in unkilled["history"]]
