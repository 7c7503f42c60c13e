"""Write data/fer2013_test.npz, the shipped default data: FER2013's PublicTest and PrivateTest rows only.

    python scripts/make_default_data.py [SOURCE_NPZ] [--out data/fer2013_test.npz]

SOURCE_NPZ is the full fer2013.npz described in ../shared/data/SOURCE.md (default: ../shared/data/fer2013.npz,
relative to the repository). Nothing from the Training split is written. The output holds pixels, emotion, usage,
ferplus_votes and ids (each row's 0-based row number in the original fer2013.csv, 28709..35886), compressed like
np.savez_compressed but with fixed zip timestamps, so running the script again gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from fercore.labels import CLASS_NAMES, SPLIT_NAMES, TRAINING
from fercore.runs import atomic_write

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "fer2013.npz"
DEFAULT_OUT = ROOT / "data" / "fer2013_test.npz"
KEPT_ARRAYS = ("pixels", "emotion", "usage", "ferplus_votes")


def test_rows(source: Path) -> dict[str, np.ndarray]:
    """The PublicTest + PrivateTest rows of the full file, in their original order, with their row numbers."""
    with np.load(source, allow_pickle=False) as full:
        missing = [name for name in KEPT_ARRAYS if name not in full.files]
        if missing:
            raise SystemExit(f"{source}: missing array(s) {', '.join(missing)}")
        arrays = {name: full[name] for name in KEPT_ARRAYS}
    keep = np.flatnonzero(arrays["usage"] != TRAINING)
    rows = {name: np.ascontiguousarray(array[keep]) for name, array in arrays.items()}
    rows["ids"] = keep.astype(np.int32)
    return rows


def save_reproducibly(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A deflated .npz (what np.savez_compressed writes) with a fixed timestamp on every member; atomic."""
    def write(file) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for name, array in arrays.items():
                member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(member, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)

    atomic_write(path, write)


def counts_table(emotion: np.ndarray, usage: np.ndarray) -> str:
    """Markdown table of images per class per split, as in data/README.md."""
    lines = ["| split | n | " + " | ".join(CLASS_NAMES) + " |", "|---" * (len(CLASS_NAMES) + 2) + "|"]
    for code in np.unique(usage):
        counts = np.bincount(emotion[usage == code], minlength=len(CLASS_NAMES))
        lines.append(f"| {SPLIT_NAMES[code]} | {counts.sum()} | " + " | ".join(map(str, counts)) + " |")
    total = np.bincount(emotion, minlength=len(CLASS_NAMES))
    lines.append(f"| total | {total.sum()} | " + " | ".join(map(str, total)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE, help=f"default: {DEFAULT_SOURCE}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source}: no such file (see ../shared/data/SOURCE.md)")
    rows = test_rows(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_reproducibly(args.out, rows)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out}: {len(rows['ids'])} rows (rows {rows['ids'][0]}..{rows['ids'][-1]}), "
          f"{args.out.stat().st_size:,} bytes\nsha256 {digest}\n")
    print(counts_table(rows["emotion"], rows["usage"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
