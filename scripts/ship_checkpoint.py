"""Copy a finished run folder into checkpoints/NAME/, the way the shipped checkpoints were made.

    python scripts/ship_checkpoint.py runs/fernet fernet [--drop-optimizer] [--no-best] [--snapshots 1,3,8,21]
                                      [--snapshot-encoding int8]

It copies last.pt (resumable), best.pt only when it differs from last.pt (to save space), history.json,
config.json and the run's snapshots (for the app's Epoch slider; --snapshots keeps only those epochs, and
--snapshot-encoding int8 halves their fp16 size, to fit the 60 MB that checkpoints/ and data/ may hold).
--drop-optimizer removes Adam's moments from last.pt (a third of the size of a model like hw3);
resuming then restarts those moments and says so. --no-best leaves best.pt out even where it is another epoch.
Shipping a shipped folder onto itself (checkpoints/hw3 hw3) re-encodes its snapshots and keeps the rest.
"""

import argparse
import filecmp
import shutil
from pathlib import Path

from fercore.checkpoints import BEST, LAST, architecture_signature, read_checkpoint, save_checkpoint
from fercore.models import build_model
from fercore.runs import CONFIG_FILE, HISTORY_FILE, SNAPSHOTS_DIR, snapshot_epochs, snapshot_path
from fercore.snapshots import ENCODINGS, reencode_snapshot

ROOT = Path(__file__).resolve().parent.parent


def ship(run: Path, name: str, drop_optimizer: bool, epochs: list[int] | None = None,
         keep_best: bool = True, snapshot_encoding: str = "fp16") -> Path:
    target = ROOT / "checkpoints" / name
    target.mkdir(parents=True, exist_ok=True)
    state = read_checkpoint(run / LAST)
    if drop_optimizer:
        state.pop("optimizer_state", None)
    state.pop("format")
    # Runs started before checkpoints recorded their architecture: record the definition they were trained with.
    state.setdefault("architecture", architecture_signature(build_model(state["model_name"])))
    save_checkpoint(state, target / LAST)
    best = run / BEST
    if keep_best and best.exists() and read_checkpoint(best)["epoch"] != state["epoch"]:
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--drop-optimizer", action="store_true")
    parser.add_argument("--no-best", action="store_true")
    parser.add_argument("--snapshots", help="the snapshot epochs to keep, comma-separated (default: all)")
    parser.add_argument("--snapshot-encoding", choices=ENCODINGS, default="fp16",
                        help="int8: a quarter of fp32, one scale per output channel (default: fp16, as trained)")
    args = parser.parse_args()
    epochs = None if args.snapshots is None else [int(e) for e in args.snapshots.split(",")]
    shipped = ship(args.run, args.name, args.drop_optimizer, epochs, keep_best=not args.no_best,
                   snapshot_encoding=args.snapshot_encoding)
    print(f"shipped into {shipped}")
