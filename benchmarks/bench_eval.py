"""Evaluation speed against this machine's fp32 matmul rate, measured in the same run.

    .venv/bin/python benchmarks/bench_eval.py [--models hw3,fernet] [--images 3589] [--threads 2]
                                              [--batch-sizes 64,256] [--tta]

For each model (untrained weights: speed does not depend on them) it runs fercore.evaluation.evaluate over
PrivateTest-sized data (the shipped PrivateTest split when data/fer2013_test.npz exists, else random faces) in
chunks, and times a 2048x2048 fp32 matmul after every chunk. On a machine shared with other processes both rates
move with the load, so the matmul rate that matters is the one measured in the same minutes, interleaved.
GFLOP/s counts conv and linear multiply-adds (fercore.models.count_flops, 2 per MAC; twice that with --tta).
"seconds" is the summed evaluation time for all images; "reopen ms" reads the cached result back from disk.
The target (issue 3) is evaluation at 60% or more of the matmul rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fercore import disk_cache, evaluation
from fercore.data import DEFAULT_DATA_PATH, FerDataset, load_dataset
from fercore.labels import PRIVATE_TEST
from fercore.models import build_model, count_flops
from fercore.transforms import Normalizer

MATMUL_SIZE = 2048


def private_test(n_images: int) -> FerDataset:
    if Path(DEFAULT_DATA_PATH).exists():
        data = load_dataset().select_split(PRIVATE_TEST)
        if len(data) >= n_images:
            return data.subset(np.arange(n_images))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n_images, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 7, size=n_images)
    return FerDataset(pixels, labels, np.full(n_images, PRIVATE_TEST), np.arange(n_images).astype(str),
                      source="random faces")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(model, normalizer, data: FerDataset, *, tta: bool, batch_size: int, chunk: int) -> tuple:
    """(evaluation seconds, matmul GFLOP/s): evaluate `chunk` images, one matmul, repeat."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b  # warm up
    eval_seconds = matmul_seconds = 0.0
    products = 0
    for start in range(0, len(data), chunk):
        part = data.subset(np.arange(start, min(start + chunk, len(data))))
        eval_seconds += timed(lambda: evaluation.evaluate(model, normalizer, part, tta=tta, batch_size=batch_size))
        matmul_seconds += timed(lambda: a @ b)
        products += 1
    return eval_seconds, 2 * MATMUL_SIZE ** 3 * products / matmul_seconds / 1e9


def reopen_ms(model, normalizer, data: FerDataset, tta: bool) -> float:
    """Milliseconds to read a cached evaluation of all of `data` back (filled first)."""
    with tempfile.TemporaryDirectory() as cache:
        first = evaluation.evaluate(model, normalizer, data.subset(np.arange(min(len(data), 256))), tta=tta,
                                    cache_key="bench", cache_dir=cache)
        # the cache file for the whole set, written from a real result's probabilities without recomputing
        probs = np.tile(first.probabilities, (-(-len(data) // len(first)), 1))[:len(data)]
        meta = evaluation.cache_meta("bench", data.fingerprint(), None, tta)
        disk_cache.write(meta, {"probabilities": probs, "seconds": np.float64(0)}, cache)
        start = time.perf_counter()
        result = evaluation.evaluate(model, normalizer, data, tta=tta, cache_key="bench", cache_dir=cache)
        elapsed = (time.perf_counter() - start) * 1e3
        assert result.from_cache
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="hw3,fernet_wide")
    parser.add_argument("--images", type=int, default=3589)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default=str(evaluation.DEFAULT_BATCH_SIZE))
    parser.add_argument("--chunk", type=int, default=512, help="images evaluated between two matmul samples")
    parser.add_argument("--tta", action="store_true", help="also time test-time augmentation (two passes)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = private_test(args.images)
    print(f"torch {torch.__version__}, {args.threads} threads, {len(data)} images ({data.source}), "
          f"matmul {MATMUL_SIZE}x{MATMUL_SIZE} fp32 after every {args.chunk} images", flush=True)
    rows = []
    for name in args.models.split(","):
        model = build_model(name).eval()
        flops = count_flops(model)
        normalizer = Normalizer.fit("scale255", data.pixels)
        evaluation.predict_probabilities(model, normalizer, data.pixels[:64])  # warm up oneDNN
        for tta in (False, True) if args.tta else (False,):
            for batch_size in map(int, args.batch_sizes.split(",")):
                seconds, rate = interleaved(model, normalizer, data, tta=tta, batch_size=batch_size,
                                            chunk=args.chunk)
                gflops = flops * (2 if tta else 1) * len(data) / seconds / 1e9
                rows.append(f"| {name} | {flops / 1e6:.0f} | {batch_size} | {'yes' if tta else 'no'} | "
                            f"{seconds:.1f} | {len(data) / seconds:.0f} | {gflops:.1f} | {rate:.1f} | "
                            f"{gflops / rate:.0%} | {reopen_ms(model, normalizer, data, tta):.1f} |")
                print(rows[-1], flush=True)
    print("\n| model | MFLOP/img | batch | TTA | seconds | img/s | GFLOP/s | matmul GFLOP/s | of matmul | reopen ms |\n"
          "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
