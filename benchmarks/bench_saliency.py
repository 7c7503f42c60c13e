"""Saliency speed: ms per image for each method and model, beside the share of the machine's fp32 matmul rate.

    .venv/bin/python benchmarks/bench_saliency.py [--threads 2] [--repeats 15] [--models hw3 fernet]

Targets (issue 3, 2-core CPU): vanilla gradient <= 20 ms per image; SmoothGrad-25 and IG-32 <= 150 ms each.
Work counted per row (image x sample or step): forward FLOPs (fercore.models.count_flops) + the same again for the
backward pass to the input (a conv's input gradient costs what its forward costs; no weight gradients are
computed, since the parameters are not differentiated). Grad-CAM stops its backward at the chosen layer, so its
count is an upper bound. The fp32 matmul rate (2048 x 2048) is measured right before each row, and every figure is
the best of `--repeats` runs, so a row's share compares like with like even on a machine shared with other work.
"""

import argparse
import os
import time

# Before torch starts OpenMP: waiting threads sleep instead of spinning. On a 2-core machine shared with other work a
# spinning thread takes the core its partner needs and every parallel op waits a scheduler slice (a one-image
# gradient then takes hundreds of ms instead of ~10). Set OMP_WAIT_POLICY=active to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import torch  # noqa: E402

from fercore import saliency  # noqa: E402
from fercore.models import build_model, count_flops  # noqa: E402

CASES = [  # (label, method, rows per image, options)
    ("gradient", "gradient", 1, {}),
    ("smoothgrad-25", "smoothgrad", 25, {"samples": 25}),
    ("ig-32", "integrated_gradients", 32, {"steps": 32}),
    ("gradcam", "gradcam", 1, {}),
]
TARGET_MS = {"gradient": 20, "smoothgrad-25": 150, "ig-32": 150}


def best_seconds(fn, repeats: int, warmup: int = 2) -> float:
    """Best of `repeats` timed runs: the least disturbed by other processes on a shared machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(repeats: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048 ** 3 / best_seconds(lambda: a @ b, repeats) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=["hw3", "fernet_wide"])  # the shipped architectures
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}); work = 2 x forward FLOPs x rows; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print(f"{'model':<8} {'method':<14} {'ms/image':>9} {'target':>11} {'GFLOP/s':>8} {'matmul':>7} {'share':>6}")
    for name in args.models:
        model = build_model(name).eval()
        flops = count_flops(model)
        image = torch.randn(1, 1, 48, 48)
        for label, method, rows, options in CASES:
            peak = matmul_gflops(args.repeats)
            seconds = best_seconds(lambda: saliency.compute_saliency(method, model, image, None, **options),
                                   args.repeats)
            rate = 2 * flops * rows / seconds / 1e9
            target = TARGET_MS.get(label)
            verdict = "" if target is None else f"{target:>4} {'ok' if seconds * 1e3 <= target else 'MISS'}"
            print(f"{name:<8} {label:<14} {seconds * 1e3:>9.1f} {verdict:>11} {rate:>8.1f} {peak:>7.1f} "
                  f"{rate / peak:>6.0%}")
        print(f"{'':<8} ({flops / 1e6:.0f} MFLOP forward per image)")

if __name__ == "__main__":
    main()
