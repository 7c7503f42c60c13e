"""The homework's question 2, redone honestly: one fixed budget, one change per row.

    python scripts/question2.py run --data ../shared/data/fer2013.npz --out runs/q2 --epochs 1 --threads 2
    python scripts/question2.py table runs/q2          # the model card's markdown table

Each row is a plain `python -m fercore train ...` command (printed, and kept in the run's config.json), so any row
can be reproduced without this script. `run` skips rows whose run folder already holds the asked epochs, so it can
be stopped and started again. Each row's last epoch (the fixed budget) is evaluated once on PrivateTest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fercore.checkpoints import LAST, load_model
from fercore.data import load_dataset
from fercore.evaluation import evaluate_checkpoint
from fercore.runs import read_json
from fercore.training import HISTORY_FILE

ROOT = Path(__file__).resolve().parent.parent

DISGUST = 1

# One change per row, each adding to the row above it, as the homework built its network up.
ROWS = {
    "q2_1_raw": ["--model", "hw3_nobn", "--normalize", "none"],
    "q2_2_scale255": ["--model", "hw3_nobn"],
    "q2_3_batchnorm": ["--model", "hw3"],
    "q2_4_augment": ["--model", "hw3", "--augment", "homework"],
    "q2_5_weights": ["--model", "hw3", "--augment", "homework", "--balance", "weights"],
    "q2_6_sampler": ["--model", "hw3", "--augment", "homework", "--balance", "sampler"],
}
LABELS = {
    "q2_1_raw": "no normalization, no BatchNorm",
    "q2_2_scale255": "/255",
    "q2_3_batchnorm": "/255 + BatchNorm (hw3)",
    "q2_4_augment": "+ augmentation (homework's)",
    "q2_5_weights": "+ class-balanced loss weights",
    "q2_6_sampler": "+ class-balanced sampling (instead of weights)",
}


def row_args(name: str, epochs: int) -> list[str]:
    """`fercore train` arguments of one row at a budget of `epochs`."""
    return [*ROWS[name], "--epochs", str(epochs)]


def run_rows(data: str, out: Path, epochs: int, extra: list[str]) -> None:
    for name in ROWS:
        folder = out / name
        if len(read_json(folder / HISTORY_FILE, [])) >= epochs:
            print(f"{name}: already trained {epochs} epoch(s), skipped", flush=True)
            continue
        command = [sys.executable, "-m", "fercore"]
        if (folder / LAST).exists():  # an interrupted row resumes where it stopped
            command += ["resume", str(folder), "--epochs", str(epochs), "--quiet"]
        else:
            command += ["train", "--data", data, "--out", str(folder), "--quiet", *row_args(name, epochs), *extra]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
    evaluate_rows(data, out)


def evaluate_rows(data: str, out: Path) -> dict:
    """PrivateTest accuracy and Disgust recall of each row's last epoch, saved as out/question2.json."""
    dataset = load_dataset(data)
    rows = {}
    for name in ROWS:
        checkpoint = out / name / LAST
        if not checkpoint.exists():
            continue
        loaded = load_model(checkpoint)
        result = evaluate_checkpoint(loaded, dataset, split="PrivateTest", use_cache=False)
        last = loaded.history[-1]
        rows[name] = {"epochs": len(loaded.history), "train_acc": last["train_acc"], "public_acc": last["val_acc"],
                      "seconds": sum(entry["seconds"] for entry in loaded.history),
                      "public_curve": [entry["val_acc"] for entry in loaded.history],
                      "private": result.to_dict(), "config": loaded.config}
    (out / "question2.json").write_text(json.dumps(rows, indent=1))
    print(markdown_table(rows))
    return rows


def markdown_table(rows: dict) -> str:
    lines = ["| row | train accuracy (train mode) | PublicTest | PrivateTest | Disgust recall (PrivateTest) "
             "| seconds |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        private = row["private"]
        disgust = private["confusion"][DISGUST]
        lines.append(f"| {LABELS[name]} | {row['train_acc']:.2%} | {row['public_acc']:.2%} | "
                     f"{private['accuracy']:.2%} | {private['per_class'][DISGUST]['recall']:.1%} "
                     f"({disgust[DISGUST]} of {sum(disgust)}) | {row['seconds']:.0f} |")
    has_curves = any(row.get("public_curve") for row in rows.values())  # older outputs lack them
    return "\n".join(lines + (["", curve_table(rows)] if has_curves else []))


def curve_table(rows: dict) -> str:
    """Each row's PublicTest accuracy after every epoch: whether the budget let its curve flatten."""
    epochs = max(len(row.get("public_curve", [])) for row in rows.values())
    lines = ["| row | " + " | ".join(str(epoch) for epoch in range(1, epochs + 1)) + " |",
             "|---|" + "---|" * epochs]
    for name, row in rows.items():
        lines.append(f"| {LABELS[name]} | " + " | ".join(f"{acc:.1%}" for acc in row.get("public_curve", [])) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train every row (skipping finished ones), then evaluate")
    run.add_argument("--data", required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--epochs", type=int, required=True, help="the fixed budget, the same for every row")
    run.add_argument("--threads", default="2")
    run.add_argument("--device", default="cpu")
    table = commands.add_parser("table", help="print the markdown table of an evaluated out folder")
    table.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run_rows(args.data, args.out, args.epochs, ["--threads", args.threads, "--device", args.device])
    else:
        print(markdown_table(json.loads((args.out / "question2.json").read_text())))


if __name__ == "__main__":
    main()
