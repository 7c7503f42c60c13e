"""How fast fercore reads the full 35,887-row fer2013.csv, beside the naive pandas + per-row split way.

    python benchmarks/bench_data.py [--source ../shared/data/fer2013.npz] [--csv fer2013.csv] [--repeats 3]

Without --csv, the full CSV (Kaggle's format, ~301 MB) is generated from the shared fer2013.npz into a temporary
folder and deleted afterwards; it is never committed. The cache goes to a temporary folder too, so your own
~/.cache/fercore is untouched. Goals (issue 2): first parse <= 3 s, cached load <= 0.3 s on the 2-core machine.
Wall time is what a user waits; CPU time is shown too because the machine is shared and wall time moves with load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from fercore import data
from fercore.labels import SPLIT_NAMES

ROOT = Path(__file__).resolve().parent.parent

GOAL_FIRST_PARSE_S = 3.0
GOAL_CACHED_S = 0.3


def write_full_csv(source: Path, out: Path) -> int:
    """fer2013.csv exactly as Kaggle ships it (emotion,"pixels",Usage), from the npz; returns its row count."""
    with np.load(source) as full:
        pixels = full["pixels"].reshape(len(full["pixels"]), -1)
        emotion, usage = full["emotion"], full["usage"]
    text = [str(v).encode() for v in range(256)]
    names = [name.encode() for name in SPLIT_NAMES]
    with open(out, "wb") as f:
        f.write(b"emotion,pixels,Usage\n")
        for image, label, split in zip(pixels, emotion, usage):
            f.write(b'%d,"%s",%s\n' % (label, b" ".join(map(text.__getitem__, image.tolist())), names[split]))
    return len(pixels)


def naive(path: Path) -> np.ndarray:
    """The common homework way: pandas, then one str.split and np.array per row."""
    import pandas as pd

    frame = pd.read_csv(path)
    return np.array([np.array(row.split(), dtype=np.uint8) for row in frame["pixels"]]).reshape(-1, 48, 48)


def pandas_join_fromstring(path: Path) -> np.ndarray:
    """pandas' C parser for the three columns, then one big join and np.fromstring (no per-row check)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={"pixels": str})
    return np.fromstring(" ".join(frame["pixels"].tolist()), dtype=np.uint8, sep=" ").reshape(-1, 48, 48)


def timed(function, repeats: int):
    """(best wall seconds, CPU seconds of that run, result)."""
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        run = (time.perf_counter() - wall, time.process_time() - cpu)
        best = run if best is None or run[0] < best[0] else best
    return best[0], best[1], result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013.npz")
    parser.add_argument("--csv", type=Path, help="an existing fer2013.csv to read instead of generating one")
    parser.add_argument("--repeats", type=int, default=3, help="runs per fast method (best is shown)")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the slow comparison rows")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fercore-bench-") as tmp:
        os.environ["FERCORE_CACHE_DIR"] = str(Path(tmp) / "cache")
        csv = args.csv
        if csv is None:
            if not args.source.is_file():
                parser.error(f"{args.source} not found: pass --source or --csv")
            csv = Path(tmp) / "fer2013.csv"
            start = time.perf_counter()
            n = write_full_csv(args.source, csv)
            print(f"generated {csv.name}: {n} rows, {csv.stat().st_size / 1e6:.1f} MB "
                  f"in {time.perf_counter() - start:.1f} s")
        rows = []  # (method, wall, cpu, goal)

        wall, cpu, reference = timed(lambda: data.load_dataset(csv, cache=False), args.repeats)
        rows.append(("fercore, first parse (cache=False)", wall, cpu, GOAL_FIRST_PARSE_S))
        wall, cpu, _ = timed(lambda: data.load_dataset(csv), 1)
        rows.append(("fercore, first load + cache write", wall, cpu, None))
        wall, cpu, cached = timed(lambda: data.load_dataset(csv), args.repeats)
        rows.append(("fercore, cached load", wall, cpu, GOAL_CACHED_S))
        assert np.array_equal(cached.pixels, reference.pixels) and np.array_equal(cached.labels, reference.labels)
        fresh = data.FerDataset(reference.pixels, reference.labels, reference.split, reference.ids)
        wall, cpu, _ = timed(fresh.fingerprint, 1)
        rows.append((f"FerDataset.fingerprint() ({len(fresh)} images)", wall, cpu, None))
        if not args.skip_naive:
            wall, cpu, pixels = timed(lambda: pandas_join_fromstring(csv), 1)
            assert np.array_equal(pixels, reference.pixels)
            rows.append(("pandas C parser + join + np.fromstring", wall, cpu, None))
            wall, cpu, pixels = timed(lambda: naive(csv), 1)
            assert np.array_equal(pixels, reference.pixels)
            rows.append(("naive: pandas + per-row str.split + np.array", wall, cpu, None))

    print(f"\n{len(reference)} rows; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          f"best of {args.repeats} for repeated rows")
    print(f"| {'method':<46} | {'wall s':>7} | {'CPU s':>6} | {'goal':>8} |")
    print(f"|{'-' * 48}|{'-' * 9}|{'-' * 8}|{'-' * 10}|")
    for method, wall, cpu, goal in rows:
        verdict = "" if goal is None else f"{'ok' if wall <= goal else 'MISSED'} {goal:g}"
        print(f"| {method:<46} | {wall:7.2f} | {cpu:6.2f} | {verdict:>8} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
