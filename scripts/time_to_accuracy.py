"""PrivateTest accuracy against wall time for a training recipe: the model card's time-to-accuracy curve.

    python scripts/time_to_accuracy.py --data fer2013.npz --out runs/ttacc -- \
        --model fernet --epochs 6 --schedule onecycle --lr 3e-3 --weight-decay 1e-4 --label-smoothing 0.1 \
        --augment flip=0.5,shift=0.1 --threads 2

Everything after `--` is passed to `python -m fercore train`. Training runs as that command, unchanged; this
script copies last.pt after every epoch while it runs (a 5-14 MB copy, milliseconds) and, once training is over,
evaluates each copy on PrivateTest. Wall time counts from the start of the command, data loading included.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fercore.checkpoints import LAST, load_model
from fercore.data import load_dataset
from fercore.evaluation import evaluate_checkpoint
from fercore.runs import read_json
from fercore.training import HISTORY_FILE

ROOT = Path(__file__).resolve().parent.parent


def train_keeping_epochs(data: str, out: Path, train_args: list[str]) -> list[tuple[float, Path]]:
    """Run the training command; return (seconds since start, copy of last.pt) for every finished epoch."""
    started = time.time()
    command = [sys.executable, "-m", "fercore", "train", "--data", data, "--out", str(out), "--quiet", *train_args]
    print("$", " ".join(command[1:]), flush=True)
    process = subprocess.Popen(command, cwd=ROOT)
    snapshots: list[tuple[float, Path]] = []
    while True:
        finished = process.poll() is not None
        epochs = len(read_json(out / HISTORY_FILE, []))
        if epochs > len(snapshots):
            copy = out / f"epoch{epochs}.pt"
            shutil.copyfile(out / LAST, copy)
            snapshots.append((time.time() - started, copy))
        if finished:
            break
        time.sleep(0.5)
    if process.returncode:
        sys.exit(f"training failed with exit status {process.returncode}")
    return snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the full FER2013 (with Training, PublicTest, PrivateTest)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]
    snapshots = train_keeping_epochs(args.data, args.out, train_args)
    dataset = load_dataset(args.data)
    curve = []
    for seconds, path in snapshots:
        loaded = load_model(path)
        result = evaluate_checkpoint(loaded, dataset, split="PrivateTest", use_cache=False)
        curve.append({"epoch": len(loaded.history), "wall_s": round(seconds, 1),
                      "public_acc": loaded.history[-1]["val_acc"], "private_acc": result.accuracy})
        print(f"epoch {curve[-1]['epoch']}: {seconds / 60:5.1f} min  PublicTest {curve[-1]['public_acc']:.4f}  "
              f"PrivateTest {result.accuracy:.4f}", flush=True)
    (args.out / "time_to_accuracy.json").write_text(json.dumps({"command": train_args, "curve": curve}, indent=1))


if __name__ == "__main__":
    main()
