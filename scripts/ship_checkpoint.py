"""Copy a finished run folder into checkpoints/NAME/, the way the shipped checkpoints were made.

    python scripts/ship_checkpoint.py runs/fernet fernet [--drop-optimizer] [--no-best | --best-only]
                                      [--snapshots 1,3,8,21] [--snapshot-encoding int8] [--weights fp16]

It copies last.pt (resumable), best.pt only when it differs from last.pt (to save space), history.json,
config.json and the run's snapshots (for the app's Epoch slider; --snapshots keeps only those epochs, and
--snapshot-encoding int8 halves their fp16 size, to fit the 60 MB that checkpoints/ and data/ may hold).
--drop-optimizer removes Adam's moments from last.pt (a third of the size of a model like hw3);
resuming then restarts those moments and says so. --no-best leaves best.pt out even where it is another epoch;
--best-only ships best.pt alone (the epoch chosen on validation, without last.pt: the copy cannot be resumed).
--weights fp16 stores the shipped checkpoint's weights in fp16 (half the size; they load back into fp32, and the
model card's figures are measured on them).
Shipping a shipped folder onto itself (checkpoints/hw3 hw3) re-encodes its snapshots and keeps the rest.
"""

import argparse
import filecmp
import shutil
from pathlib import Path

from fercore.checkpoints import BEST, LAST, architecture_signature, read_checkpoint, save_checkpoint
from fercore.models import build_model
from fercore.runs import CONFIG_FILE, HISTORY_FILE, SNAPSHOTS_DIR, snapshot_epochs, snapshot_path
from fercore.snapshots import ENCODINGS, encode_weights, reencode_snapshot

ROOT = Path(__file__).resolve().parent.parent


def ship(run: Path, name: str, drop_optimizer: bool, epochs: list[int] | None = None,
         keep_best: bool = True, snapshot_encoding: str = "fp16", best_only: bool = False,
         weights: str = "fp32") -> Path:
    target = ROOT / "checkpoints" / name
    target.mkdir(parents=True, exist_ok=True)
    shipped = BEST if best_only else LAST
    state = _shipped_state(run / shipped, drop_optimizer)
    if weights == "fp16":
        state["model_state"] = encode_weights(state["model_state"], "fp16")
    save_checkpoint(state, target / shipped)
    best = run / BEST
    if best_only:
        (target / LAST).unlink(missing_ok=True)
    elif keep_best and best.exists() and read_checkpoint(best)["epoch"] != state["epoch"]:
        shutil.copyfile(best, target / BEST)
    else:
        (target / BEST).unlink(missing_ok=True)
    for extra in (HISTORY_FILE, CONFIG_FILE):
        if (run / extra).exists() and not ((target / extra).exists() and filecmp.cmp(run / extra, target / extra)):
            shutil.copyfile(run / extra, target / extra)
    # Staged beside the old ones, which may be the source: shipping a shipped folder again re-encodes it in place.
    staged = target / f"{SNAPSHOTS_DIR}.new"
    shutil.rmtree(staged, ignore_errors=True)
    for epoch in snapshot_epochs(run):
        if epochs is None or epoch in epochs:
            reencode_snapshot(snapshot_path(run, epoch), staged / snapshot_path(run, epoch).name, snapshot_encoding)
    shutil.rmtree(target / SNAPSHOTS_DIR, ignore_errors=True)
    if staged.exists():
        staged.rename(target / SNAPSHOTS_DIR)
    return target


def _shipped_state(path: Path, drop_optimizer: bool) -> dict:
    state = read_checkpoint(path)
    if drop_optimizer:
        state.pop("optimizer_state", None)
    state.pop("format")
    # Runs started before checkpoints recorded their architecture: record the definition they were trained with.
    state.setdefault("architecture", architecture_signature(build_model(state["model_name"])))
    return state


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--drop-optimizer", action="store_true")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--no-best", action="store_true")
    choice.add_argument("--best-only", action="store_true")
    parser.add_argument("--snapshots", help="the snapshot epochs to keep, comma-separated (default: all)")
    parser.add_argument("--snapshot-encoding", choices=ENCODINGS, default="fp16",
                        help="int8: a quarter of fp32, one scale per output channel (default: fp16, as trained)")
    parser.add_argument("--weights", choices=("fp32", "fp16"), default="fp32",
                        help="fp16: the shipped checkpoint's weights at half the size (default: fp32, as trained)")
    args = parser.parse_args()
    epochs = None if args.snapshots is None else [int(e) for e in args.snapshots.split(",")]
    shipped = ship(args.run, args.name, args.drop_optimizer, epochs, keep_best=not args.no_best,
                   snapshot_encoding=args.snapshot_encoding, best_only=args.best_only,
                   weights=args.weights)
    print(f"shipped into {shipped}")
