"""Copy a finished run folder into checkpoints/NAME/, the way the shipped checkpoints were made.

    python scripts/ship_checkpoint.py runs/fernet fernet [--drop-optimizer]

It copies last.pt (resumable), best.pt only when it differs from last.pt (to save space), history.json,
config.json and the run's snapshots (for the app's Epoch slider). --drop-optimizer removes Adam's moments from last.pt (a third of the size of a model like hw3);
resuming then restarts those moments and says so.
"""

import argparse
import filecmp
import shutil
from pathlib import Path

from fercore.checkpoints import BEST, LAST, architecture_signature, read_checkpoint, save_checkpoint
from fercore.models import build_model
from fercore.runs import CONFIG_FILE, HISTORY_FILE, SNAPSHOTS_DIR

ROOT = Path(__file__).resolve().parent.parent


def ship(run: Path, name: str, drop_optimizer: bool) -> Path:
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
    if best.exists() and read_checkpoint(best)["epoch"] != state["epoch"]:
        shutil.copyfile(best, target / BEST)
    else:
        (target / BEST).unlink(missing_ok=True)
    for extra in (HISTORY_FILE, CONFIG_FILE):
        if (run / extra).exists() and not ((target / extra).exists() and filecmp.cmp(run / extra, target / extra)):
            shutil.copyfile(run / extra, target / extra)
    shutil.rmtree(target / SNAPSHOTS_DIR, ignore_errors=True)
    if (run / SNAPSHOTS_DIR).is_dir():
        shutil.copytree(run / SNAPSHOTS_DIR, target / SNAPSHOTS_DIR)
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--drop-optimizer", action="store_true")
    args = parser.parse_args()
    print(f"shipped into {ship(args.run, args.name, args.drop_optimizer)}")
