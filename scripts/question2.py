"""The homework's question 2, redone honestly: one fixed budget, one change per row.

    python scripts/question2.py run --data ../shared/data/fer2013.npz --out runs/q2 --epochs 1 --threads 2
    python scripts/question2.py table runs/q2          # the model card's markdown tables
    python scripts/question2.py table checkpoints/question2_80epochs.json --row4 checkpoints/hw3

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


def tables(path: Path, row4_run: Path | None = None) -> str:
    """The markdown tables of an evaluated out folder's question2.json, or of such a file itself (as shipped in
    checkpoints/), with the curve of `row4_run` (a longer run of row 4's recipe) beside the rows' if given."""
    rows = json.loads((path / "question2.json" if path.is_dir() else path).read_text())
    budget = max(row["epochs"] for row in rows.values())
    return markdown_table(rows, row4_curve(row4_run, budget) if row4_run else None)


def row4_curve(run: Path, epochs: int) -> dict[str, list[float]]:
    """PublicTest curve of a run of row 4's recipe trained past the budget (the shipped hw3), cut at the budget."""
    history = read_json(run / HISTORY_FILE, [])
    return {f"{LABELS['q2_4_augment']} (row 4: {run.name}'s history)": [entry["val_acc"] for entry in history[:epochs]]}


def markdown_table(rows: dict, row4: dict[str, list[float]] | None = None) -> str:
    lines = ["| row | train accuracy (train mode) | PublicTest | PrivateTest | Disgust recall (PrivateTest) "
             "| seconds |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        private = row["private"]
        disgust = private["confusion"][DISGUST]
        lines.append(f"| {LABELS[name]} | {row['train_acc']:.2%} | {row['public_acc']:.2%} | "
                     f"{private['accuracy']:.2%} | {private['per_class'][DISGUST]['recall']:.1%} "
                     f"({disgust[DISGUST]} of {sum(disgust)}) | {row['seconds']:.0f} |")
    curves = {**(row4 or {}), **{LABELS[name]: row["public_curve"] for name, row in rows.items()
                                   if row.get("public_curve")}}
    return "\n".join(lines + (["", curve_table(curves)] if curves else []))  # older outputs lack curves


def curve_table(curves: dict[str, list[float]]) -> str:
    """PublicTest accuracy by epoch, or by ten-epoch mean past twenty: whether the budget let each curve flatten."""
    epochs = max(len(curve) for curve in curves.values())
    width = 1 if epochs <= 20 else 10  # eighty columns would not be read
    spans = [(start, min(start + width, epochs)) for start in range(0, epochs, width)]
    heads = [str(stop) if width == 1 else f"{start + 1}-{stop}" for start, stop in spans]
    lines = [f"| {'row' if width == 1 else 'PublicTest, mean of epochs'} | " + " | ".join(heads) + " |",
             "|---|" + "---|" * len(spans)]
    for label, curve in curves.items():
        chunks = [curve[start:stop] for start, stop in spans if curve[start:stop]]
        lines.append(f"| {label} | " + " | ".join(f"{sum(chunk) / len(chunk):.1%}" for chunk in chunks) + " |")
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
    table = commands.add_parser("table", help="print the markdown tables of an evaluated out folder or its json")
    table.add_argument("out", type=Path)
    table.add_argument("--row4", type=Path, help="a run of row 4's recipe trained past the budget (checkpoints/hw3): "
                       "its PublicTest curve is printed with the rows'")
    args = parser.parse_args()
    if args.command == "run":
        run_rows(args.data, args.out, args.epochs, ["--threads", args.threads, "--device", args.device])
    else:
        print(tables(args.out, args.row4))


if __name__ == "__main__":
    main()
