"""Occlusion speed: one face's occlusion_map at the defaults (8 px patch, 4 px stride: 121 occluded copies), per
shipped checkpoint and thread count, beside the machine's fp32 matmul rate measured in the same run.

    .venv/bin/python benchmarks/bench_occlusion.py [--repeats 10] [--threads 1 2]

Goal: answers a click, well under 1 s on a 2-core CPU. "whole face" runs every copy through the whole model, the
reference the windowed first block (fercore.occlusion._local_prefix) is compared with; it is the same map.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # as bench_saliency: no spinning threads on a shared machine

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_saliency import best_seconds, matmul_gflops  # noqa: E402 -- beside this file, so on the path
from fercore import occlusion  # noqa: E402
from fercore.checkpoints import load_model  # noqa: E402
from fercore.runs import list_runs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def whole_face(model, x):
    """occlusion_map with the windowed first block turned off."""
    windowed = occlusion._local_prefix
    occlusion._local_prefix = lambda m: (0, 0)
    try:
        return occlusion.occlusion_map(model, x)
    finally:
        occlusion._local_prefix = windowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", help="checkpoints under checkpoints/ (default: every shipped one)",
                        default=[run.name for run in list_runs(ROOT / "checkpoints")])
    args = parser.parse_args()
    faces = np.load(ROOT / "data" / "fer2013_test.npz")["pixels"][:1]
    print("| model | threads | matmul GFLOP/s | occlusion_map ms | whole face ms | covered_prediction ms |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models:
        loaded = load_model(ROOT / "checkpoints" / name)
        x = loaded.preprocess(faces)
        for threads in args.threads:
            torch.set_num_threads(threads)
            rate = matmul_gflops(args.repeats)
            fast = best_seconds(lambda: occlusion.occlusion_map(loaded.model, x), args.repeats)
            slow = best_seconds(lambda: whole_face(loaded.model, x), args.repeats)
            cover = best_seconds(lambda: occlusion.covered_prediction(loaded, faces[0], "mouth"), args.repeats)
            print(f"| {name} | {threads} | {rate:.0f} | {1000 * fast:.0f} | {1000 * slow:.0f} | {1000 * cover:.0f} |")


if __name__ == "__main__":
    main()
