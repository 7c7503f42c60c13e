"""One GPU session that trains the candidates for the most accurate checkpoint, hw3 and the question-2 table.

Every run trains at once on the one GPU, each a plain `python -m fercore train ...` command (printed in the log and
kept in its config.json, so each can be reproduced on any machine without this script): hw3 with the homework's
recipe, fernet and two fernet_wide recipes (one-cycle), and the rows of question 2 (scripts/question2.py). They run
with `--precision auto`, which on a GPU with bf16 (Ampere and later) means bf16 autocast with fp32 weights and
Adam state (fercore.precision decides, and the first line of each run's log says what it chose); channels_last
and cudnn.benchmark are the trainer's own on CUDA, and the data stays on the device. The script only decides how
many epochs the one-cycle runs get: it starts them, times their second epoch while everything runs at once, and
restarts them with as many epochs as fit before the deadline. Then it evaluates question 2's rows on PrivateTest
and bundles every run's small files with the weights worth keeping.

A GPU machine that takes at most 64 MiB of files and gives back a few files of under 16 MiB, for one command of
under 10 minutes, is enough. So there are three steps:

    python scripts/gpu_campaign.py pack .gpu                 # here: fer2013.npz -> a PNG mosaic + labels (58 MB)
    python scripts/gpu_campaign.py run .gpu --out $OUT --train-seconds 465   # there: every run at once
    python scripts/gpu_campaign.py unpack-results $OUT runs/gpu   # here: the runs, ready for ship_checkpoint.py

`.gpu` travels with the repository's files (keep it out of git, e.g. in .git/info/exclude), 64 MiB in all: move
the large tracked files (data/fer2013_test.npz, checkpoints/*/last.pt; the runs do not need them) out of the tree
for the call, and back afterwards; give the run a timeout of about 580 s. `run --smoke` rehearses the whole session
on a CPU (96 images per split, question 2 at 2 epochs; on 2 cores its ten runs need about 300 s to start and
finish an epoch or two): `python scripts/gpu_campaign.py run .gpu --out /tmp/out --smoke --train-seconds 300`.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import question2  # scripts/question2.py: the rows and their evaluation
from fercore.checkpoints import read_checkpoint, save_checkpoint
from fercore.runs import read_json
from fercore.training import HISTORY_FILE

ROOT = Path(__file__).resolve().parent.parent

SHARED_DATA = ROOT.parent / "shared" / "data" / "fer2013.npz"
MOSAIC_COLUMNS = 128
META_ARRAYS = ("emotion", "usage", "usage_names", "emotion_names", "ferplus_votes", "ferplus_columns")
PART_BYTES = 15 * 2 ** 20  # under the 16 MiB a file may have on the way back

WIDE_AUGMENT = "flip=0.5,shift=0.1,rotate=10,zoom=0.1,erase=0.25"
STRONG_AUGMENT = "flip=0.5,shift=0.15,rotate=15,zoom=0.15,erase=0.5"
Q2_EPOCHS = 20


def runs(data: str, device: str = "cuda", q2_epochs: int = Q2_EPOCHS) -> dict[str, dict]:
    """name -> {"args": fercore train arguments, "fit": True when its epochs are fitted to the deadline}."""
    # auto: bf16 autocast where the GPU supports it (fercore.precision), fp32 elsewhere
    common = ["--data", data, "--device", device, "--precision", "auto", "--threads", "1", "--quiet"]
    onecycle = ["--schedule", "onecycle", "--label-smoothing", "0.1"]
    table = {
        # The homework's recipe as it was: Adam 1e-3 constant, batch 128, /255, BatchNorm, its augmentation,
        # 250 epochs asked for and stopped at the deadline (a constant rate does not depend on the total).
        "hw3": {"args": ["--model", "hw3", "--augment", "homework", "--epochs", "250"], "fit": False},
        "wide_a": {"args": ["--model", "fernet_wide", *onecycle, "--lr", "2e-3", "--weight-decay", "1e-4",
                            "--augment", WIDE_AUGMENT], "fit": True},
        "wide_b": {"args": ["--model", "fernet_wide", *onecycle, "--lr", "2e-3", "--weight-decay", "5e-4",
                            "--augment", STRONG_AUGMENT], "fit": True},
        "fernet": {"args": ["--model", "fernet", *onecycle, "--lr", "3e-3", "--weight-decay", "1e-4",
                            "--augment", WIDE_AUGMENT], "fit": True},
    }
    for name in question2.ROWS:  # the homework's question 2: one fixed budget, one change per row
        table[name] = {"args": question2.row_args(name, q2_epochs), "fit": False}
    for spec in table.values():
        spec["args"] = [*spec["args"], *common]
    return table


# ------------------------------------------------------------------------------------------------ data transport

def pack(folder: Path) -> None:
    """fer2013.npz as a lossless PNG mosaic (zlib alone barely shrinks faces; PNG's filters do) plus the labels."""
    stored = np.load(SHARED_DATA)
    pixels = stored["pixels"]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_mosaic(pixels)).save(folder / "pixels.png", optimize=True)
    np.savez(folder / "meta.npz", count=len(pixels), **{k: stored[k] for k in META_ARRAYS})
    assert np.array_equal(unpack_pixels(folder), pixels), "the mosaic does not round-trip"
    print(f"packed {len(pixels)} images into {folder} "
          f"({sum(f.stat().st_size for f in folder.iterdir()) / 1e6:.1f} MB)")


def to_mosaic(pixels: np.ndarray) -> np.ndarray:
    rows = -(-len(pixels) // MOSAIC_COLUMNS)
    padded = np.zeros((rows * MOSAIC_COLUMNS, 48, 48), np.uint8)
    padded[:len(pixels)] = pixels
    return padded.reshape(rows, MOSAIC_COLUMNS, 48, 48).transpose(0, 2, 1, 3).reshape(rows * 48, -1)


def unpack_pixels(folder: Path) -> np.ndarray:
    mosaic = np.asarray(Image.open(folder / "pixels.png"))
    count = int(np.load(folder / "meta.npz")["count"])
    rows = mosaic.shape[0] // 48
    tiles = mosaic.reshape(rows, 48, MOSAIC_COLUMNS, 48).transpose(0, 2, 1, 3).reshape(-1, 48, 48)
    return np.ascontiguousarray(tiles[:count])


def unpack_data(folder: Path, target: Path, smoke: bool = False) -> None:
    meta = np.load(folder / "meta.npz")
    arrays = {"pixels": unpack_pixels(folder), **{k: meta[k] for k in META_ARRAYS}}
    if smoke:  # a rehearsal on a CPU: 96 images of each split
        keep = np.concatenate([np.flatnonzero(arrays["usage"] == code)[:96] for code in range(3)])
        arrays = {k: (v[keep] if len(v) == len(arrays["usage"]) and k != "usage_names" else v)
                  for k, v in arrays.items()}
    np.savez(target, **arrays)


# ------------------------------------------------------------------------------------------------ the session

class Job:
    def __init__(self, name: str, args: list[str], work: Path, log):
        self.name, self.args, self.folder = name, args, work / name
        shutil.rmtree(self.folder, ignore_errors=True)
        command = [sys.executable, "-m", "fercore", "train", *args, "--out", str(self.folder)]
        log.write(f"{time.strftime('%H:%M:%S')} start {name}: python -m fercore train {' '.join(args)} "
                  f"--out runs/{name}\n")
        log.flush()
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def history(self) -> list[dict]:
        return read_json(self.folder / HISTORY_FILE, [])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def with_epochs(args: list[str], epochs: int) -> list[str]:
    return [*args, "--epochs", str(epochs)]


def campaign(pack_folder: Path, out: Path, train_seconds: float, smoke: bool = False) -> None:
    started = time.time()
    deadline = started + train_seconds
    work = Path("/tmp/campaign")
    work.mkdir(parents=True, exist_ok=True)
    data = work / "fer2013.npz"
    unpack_data(pack_folder, data, smoke)
    log = open(out / "campaign.log", "a")
    log.write(f"data unpacked in {time.time() - started:.1f}s\n")
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                       stdout=log, stderr=subprocess.STDOUT)
    table = runs(str(data), "cpu", 2) if smoke else runs(str(data))
    jobs = {name: Job(name, with_epochs(spec["args"], 500) if spec["fit"] else spec["args"], work, log)
            for name, spec in table.items()}
    fitted: set[str] = set()
    while time.time() < deadline and any(job.process.poll() is None for job in jobs.values()):
        time.sleep(2)
        for name, spec in table.items():  # probe: time the second epoch with everything running, then restart
            history = jobs[name].history()
            if spec["fit"] and name not in fitted and len(history) >= 2:
                jobs[name].kill()
                per_epoch = history[1]["seconds"] * 1.1 + 0.5
                epochs = max(3, min(200, int((deadline - time.time() - 20) / per_epoch)))
                log.write(f"{name}: epoch 2 took {history[1]['seconds']:.1f}s with all runs going -> {epochs} "
                          f"epochs\n")
                jobs[name] = Job(name, with_epochs(spec["args"], epochs), work, log)
                fitted.add(name)
    for job in jobs.values():
        if job.process.poll() is None:
            log.write(f"{time.strftime('%H:%M:%S')} deadline: stopping {job.name} after "
                      f"{len(job.history())} epochs\n")
        job.kill()
    log.write(f"training ended after {time.time() - started:.0f}s\n")
    log.flush()
    question2.evaluate_rows(str(data), work)
    log.write("question 2 evaluated\n")
    bundle(jobs, work, out, log)
    log.write(f"done after {time.time() - started:.0f}s\n")
    log.close()


def bundle(jobs: dict[str, Job], work: Path, out: Path, log) -> None:
    """One tar of every run's small files, the shipped candidates' checkpoints without Adam's moments (the best
    fernet_wide only), cut into parts that fit the way back. The runs' snapshots stay behind."""
    widest = max(("wide_a", "wide_b"), key=lambda n: (jobs[n].history() or [{"val_acc": -1}])[-1]["val_acc"])
    keep_weights = {"hw3/last.pt", "hw3/best.pt", "fernet/last.pt", f"{widest}/last.pt"}  # one-cycle: the last
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, job in jobs.items():
            for path in sorted(job.folder.glob("*")):
                if path.is_dir():  # the snapshots folder: a long run's would not fit the way back
                    continue
                if path.suffix != ".pt":
                    tar.add(path, arcname=f"{name}/{path.name}")
                elif f"{name}/{path.name}" in keep_weights:
                    tar.add(strip_optimizer(path), arcname=f"{name}/{path.name}")
        tar.add(work / "question2.json", arcname="question2.json")
    data = buffer.getvalue()
    for index in range(0, len(data), PART_BYTES):
        (out / f"results.tar.{index // PART_BYTES:02d}").write_bytes(data[index:index + PART_BYTES])
    log.write(f"bundled {len(data) / 1e6:.1f} MB (kept weights of {sorted(keep_weights)})\n")


def strip_optimizer(path: Path) -> Path:
    state = read_checkpoint(path)
    state.pop("optimizer_state", None)
    state.pop("format")
    stripped = path.with_name(f"stripped-{path.name}")
    save_checkpoint(state, stripped)
    return stripped


def unpack_results(parts_folder: Path, target: Path) -> None:
    data = b"".join(p.read_bytes() for p in sorted(parts_folder.glob("results.tar.*")))
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(target, filter="data")
    print(f"unpacked {len(data) / 1e6:.1f} MB into {target}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("pack").add_argument("folder", type=Path)
    run = steps.add_parser("run")
    run.add_argument("folder", type=Path)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--train-seconds", type=float, default=450)
    run.add_argument("--smoke", action="store_true", help="rehearse on a CPU with 96 images per split")
    unpack = steps.add_parser("unpack-results")
    unpack.add_argument("parts", type=Path)
    unpack.add_argument("target", type=Path)
    args = parser.parse_args()
    if args.step == "pack":
        pack(args.folder)
    elif args.step == "run":
        campaign(args.folder, args.out, args.train_seconds, args.smoke)
    else:
        unpack_results(args.parts, args.target)
