"""Gradient-ascent speed per conv layer, beside the share of this machine's fp32 matmul rate that the work reaches.

For every conv layer of each model: seconds for 64 filters (all of them when the layer has fewer) x 100 steps of
fercore.filters.visualize_filters at its defaults for that layer (what the Filters page renders first: see
fercore.filters.render), all filters in one batch, the network run only up to the layer.

FLOPs counted: the convolutions the truncated network runs before the layer (from their real output shapes, via
hooks), forward plus the backward to the input image. Parameters are frozen, so there are no weight gradients and
the backward costs what the forward does. The layer's own filter adds, before its ReLU, one multiply-add per element
of its input (its mean response is a dot product with a fixed pattern, see fercore.filters.objectives), after it
the filter's own convolution (one filter per image). Elementwise work (BN, ReLU, pooling, Adam) is not counted: it
is memory-bound and reported only through the time it takes.

The matmul rate is a 2048x2048 fp32 matmul, measured right before and after each row; a row's share is its GFLOP/s
over the mean of the two. On a machine shared with other work, wall-clock rates say more about the neighbours than
about the code, so each is also measured per CPU second (process time of all threads): "cpu share" is the work's
FLOPs per CPU second over the matmul's, the efficiency while it had the cores. On an idle machine the two agree.

    python benchmarks/bench_filters.py [--models hw3,fernet] [--layers conv1,conv4] [--steps 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

# Before torch starts OpenMP: threads that wait for each other sleep instead of spinning. On a 2-core machine shared
# with other work, a spinning thread takes the core its partner needs, and every parallel op then waits a scheduler
# time slice (hw3's first layer: 6 s instead of 0.2 s under load). Set OMP_WAIT_POLICY=active to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import torch  # noqa: E402
from torch import nn

from fercore import filters  # noqa: E402
from fercore.models import build_model, conv_layers  # noqa: E402

MATMUL_N = 2048
HEAVY_GFLOP = 100  # layers whose ascent is compute-bound enough to be held to 50% of the matmul rate


@dataclass
class Timing:
    wall: float  # seconds
    cpu: float   # CPU seconds of all this process's threads: the time it actually had the cores


def timed(work: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def matmul_rate(repeats: int = 5) -> tuple[float, float]:
    """GFLOP/s of a 2048x2048 fp32 matmul: per wall second and per CPU second (best of a few)."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    a @ b
    timings = [timed(lambda: a @ b) for _ in range(repeats)]
    flop = 2 * MATMUL_N ** 3 / 1e9
    return flop / min(t.wall for t in timings), flop / min(t.cpu for t in timings)


def ascent_flops(model: nn.Module, layer: str, images: int, steps: int) -> float:
    """Conv FLOPs of `steps` ascent steps on `images` images: forward and input-gradient backward of the truncated
    network, plus the dot product that gives each filter's mean response."""
    site = filters.find_layer(model, layer)
    per_image = 0

    def count(module: nn.Conv2d, inputs, output):
        nonlocal per_image
        kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        per_image += 2 * kernel * output[0].numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            conv_input = filters.run_until(model, torch.zeros(1, *filters.IMAGE_SHAPE), site.conv, before=True)
    finally:
        for handle in handles:
            handle.remove()
    if filters.default_settings(model, layer)["stage"] == "activation":
        kernel = site.conv.in_channels // site.conv.groups * site.conv.kernel_size[0] * site.conv.kernel_size[1]
        per_image += 2 * kernel * site.output_hw[0] * site.output_hw[1]
    else:
        per_image += 2 * conv_input.numel()
    return 2 * per_image * images * steps


def time_layer(model: nn.Module, layer: str, count: int, steps: int) -> Timing:
    filters.visualize_filters(model, layer, range(count), steps=2)  # warm-up: oneDNN primitives, allocator

    def progress(step: int, total: int) -> None:
        print(f"\r  {layer}: step {step}/{total}", end="", file=sys.stderr, flush=True)

    timing = timed(lambda: filters.visualize_filters(model, layer, range(count), steps=steps, progress=progress))
    print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="hw3,fernet_wide")
    parser.add_argument("--layers", default="", help="comma-separated conv layer names (default: all)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}), {args.steps} steps, up to {args.filters} filters per layer in one batch")
    header = (f"{'model':8} {'layer':6} {'filters':>7} {'seconds':>8} {'ms/step':>8} {'GFLOP':>8} {'GFLOP/s':>8} "
              f"{'matmul':>7} {'share':>6} {'cpu-s':>7} {'cpu share':>9}  goal")
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        model = build_model(name).eval()
        layers = conv_layers(model)
        chosen = args.layers.split(",") if args.layers else list(layers)
        for index, layer in enumerate(layers):
            if layer not in chosen:
                continue
            count = min(args.filters, layers[layer].out_channels)
            before = matmul_rate()
            timing = time_layer(model, layer, count, args.steps)
            after = matmul_rate()
            work = ascent_flops(model, layer, count, args.steps) / 1e9
            matmul_wall, matmul_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            share, cpu_share = work / timing.wall / matmul_wall, work / timing.cpu / matmul_cpu
            if index == 0:
                goal = f"<= 1 s: {'met' if timing.wall <= 1 else 'MISSED'}"
            elif work >= HEAVY_GFLOP:
                goal = f">= 50%: {'met' if share >= 0.5 else 'MISSED'}"
            else:
                goal = "(light: memory-bound)"
            print(f"{name:8} {layer:6} {count:7d} {timing.wall:8.2f} {1000 * timing.wall / args.steps:8.1f} "
                  f"{work:8.1f} {work / timing.wall:8.1f} {matmul_wall:7.1f} {share:6.0%} {timing.cpu:7.1f} "
                  f"{cpu_share:9.0%}  {goal}", flush=True)


if __name__ == "__main__":
    main()
