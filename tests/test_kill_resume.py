"""A training process killed with SIGKILL again and again, at seeded random moments, and resumed each time, ends with
exactly the weights of a run that was never killed."""

from __future__ import annotations

import queue
import random
import subprocess
import sys
import threading
import time

import torch

from fercore.checkpoints import LAST, read_checkpoint
from fixtures import ROOT, tiny_fer_csv

KILLS = 12
TRAIN_ARGS = ["--model", "fernet", "--epochs", "24", "--batch-size", "16", "--schedule", "onecycle", "--lr", "3e-3",
              "--augment", "flip=0.5,shift=0.1,rotate=5,erase=0.25", "--seed", "7", "--threads", "1",
              "--device", "cpu", "--quiet"]


def fercore(*args: str) -> tuple[subprocess.Popen, queue.Queue]:
    """Start `python -m fercore ...`; its output lines arrive in the queue as they are printed."""
    child = subprocess.Popen([sys.executable, "-m", "fercore", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True).start()
    return child, lines


def output(lines: queue.Queue) -> str:
    return "".join(lines.queue)


def epochs_done(run) -> int:
    return len(read_checkpoint(run / LAST)["history"]) if (run / LAST).exists() else 0


def kill_moment(child, lines: queue.Queue, rng: random.Random) -> float:
    """Wait for a seeded random moment to kill at, measured from events rather than the clock, so kills land in
    every phase however fast the machine is: a quarter of them while the process starts (imports, data), the rest
    at up to 2 s into training, which spans epochs (~0.5 s each here) and the checkpoint saves between them."""
    if rng.random() < 0.25:
        delay = rng.uniform(0.1, 1.5)
        time.sleep(delay)
        return delay
    while child.poll() is None:
        try:
            if lines.get(timeout=0.05).startswith(("training on", "resuming")):
                break
        except queue.Empty:
            pass
    delay = rng.uniform(0.0, 2.0)
    time.sleep(delay)
    return delay


def test_sigkill_at_random_moments_then_resume_gives_the_weights_of_an_unkilled_run(tmp_path):
    data = str(tiny_fer_csv(tmp_path, n_train=48, n_val=16))
    straight, lines = fercore("train", "--data", data, "--out", str(tmp_path / "straight"), *TRAIN_ARGS)
    assert straight.wait(timeout=600) == 0, output(lines)

    run, rng, kills, log = tmp_path / "killed", random.Random(2026), 0, []
    while True:
        before = epochs_done(run)
        # No checkpoint yet: start again; otherwise resume from the last good one.
        child, lines = (fercore("resume", str(run)) if before else
                        fercore("train", "--data", data, "--out", str(run), *TRAIN_ARGS))
        if kills == KILLS:
            assert child.wait(timeout=600) == 0, output(lines)
            break
        delay = kill_moment(child, lines, rng)
        if child.poll() is not None:
            assert child.returncode == 0, output(lines)
            break  # it finished before its kill came
        child.kill()  # SIGKILL: no handler, no cleanup
        child.wait()
        kills += 1
        after = epochs_done(run)  # the checkpoint left behind reads, and never goes back
        assert after >= before
        log.append((round(delay, 2), before, after))

    assert kills == KILLS, f"only {kills} kills landed before the run finished: {log}"
    assert any(after > before for _, before, after in log), log  # some kills came after progress was saved
    killed, unkilled = read_checkpoint(run / LAST), read_checkpoint(tmp_path / "straight" / LAST)
    assert len(killed["history"]) == len(unkilled["history"]) == 24
    for key, value in unkilled["model_state"].items():
        assert torch.equal(killed["model_state"][key], value), f"{key} differs after {kills} kills: {log}"
    assert [h["val_acc"] for h in killed["history"]] == [h["val_acc"] for h in unkilled["history"]]
