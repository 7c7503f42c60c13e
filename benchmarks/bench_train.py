"""Training throughput of the registered models against this machine's fp32 matmul rate, and augmentation speed.

    python benchmarks/bench_train.py                      # hw3 and fernet, 2 threads, batch 128
    python benchmarks/bench_train.py --models fernet --threads 1 --rounds 5
    python benchmarks/bench_train.py --models fernet --formats channels_last --rounds 1 --steps 1   # smallest

Each model is timed in fp32 and in bf16 autocast (fercore.precision, as `--precision bf16` trains). The first line
names the CPU: its instruction-set level and whether it has native bf16 (AMX, AVX-512 BF16). Without it bf16 is
emulated and 10-15x slower, so there its rows run one round of --bf16-steps steps (a figure, not a best of rounds).

One training step is forward + backward + Adam step on a batch of 128 (the homework's settings). FLOPs are counted
with fercore.models.count_flops (2 per multiply-add) and a training step is taken as 3x the forward pass. The
matmul rate is a 2048x2048 fp32 matmul on the same threads, measured between the model's rounds, so both see the same
machine load. Other processes may share the cores: each figure is the best of --rounds rounds (the least disturbed),
and the ratio of the two best figures is the figure to compare between runs. Wall-clock time is what counts for
training; CPU time (process_time) is shown beside it because it is less sensitive to other processes.

What we found (2-core AMD EPYC, torch 2.13 CPU, while other developers loaded the same cores):
- channels_last beats contiguous for hw3 (~1.3x) and is about even for fernet.
- 64-256 channel 3x3 convs: forward and backward-data run at or above the matmul rate; backward-weights (oneDNN)
  at only 50-80% of it, which is the main limit on the training fraction. A conv with 1 input channel runs at ~3%.
- BN, ReLU, max pooling (its backward zero-fills) are memory-bound: ~25% of fernet's step. Hence fernet's stride-2
  first conv: no 48x48 activations at all (68% of matmul vs 63% with a full-resolution first stage, 1 thread).
- Adam(fused=True) (--fused-adam): ~3% faster for fernet here, and no gain on the Intel Xeon with AMX: in one
  process, steps alternated, best of 6 rounds, 0.99x foreach for hw3 in bf16 and 0.95x in fp32, 0.95x and 1.10x for
  fernet_fullres. So training keeps torch's default.
- torch.compile (inductor, CPU): 4+ minutes to compile here and no faster.
- Training's in-place ReLUs (fercore.models.relus_in_place): hw3 8% faster in fp32, 11% in bf16; fernet_fullres 2-3%.

On a 2-core AMD EPYC with AVX-512 BF16 (Zen 4, no AMX), torch 2.13, alternated in one run:
- bf16 autocast is native there: hw3 2.0-2.2x and fernet_fullres 2.1-2.2x the fp32 rate.
- The homework's Keras hw3 (--keras, TensorFlow 2.21) trains at 112-132 img/s. With glibc's malloc as it is
  (--system-malloc), fercore's hw3 was 0.69-0.76x that in fp32 and 1.5-1.6x in bf16 (Keras 120.5 img/s, hw3 90.5 /
  194.4). A torch.profiler trace of that fp32 step showed why: ReLU's backward (threshold_backward) ran at 4 GB/s
  and the zero-filling of max pooling's backward at 2 GB/s, because every block over 32 MB was a fresh mapping,
  faulted in 4 KB at a time (270,000 page faults a step). fercore.allocator keeps freed memory in the heap instead.
  With it: hw3 146.1 img/s fp32 and 279.9 bf16, Keras 132.2: **1.11x Keras in fp32, 2.12x in bf16**;
  fernet_fullres 339 / 613 img/s. Another day (--rounds 5): hw3 149.7 / 286.7, Keras 134.0: 1.12x and 2.14x. In the same minutes without it: hw3 101.4 / 190.8, fernet_fullres 257 / 547.
- fernet's stride-2 first conv against fernet_fullres's full-resolution first stage (best of 5 rounds, fp32 matmul
  191 GFLOP/s): fernet 360.5 / 660.3 img/s in fp32 / bf16, fernet_fullres 339.0 / 611.9. The clean saliency maps
  cost 6-7% of the rate here, where an epoch of fernet_fullres learns more (the model card). A torch.profiler trace
  of fernet_fullres's bf16 step: the convolutions take about 75%, the 48x48 stage's BatchNorm, ReLU, pooling and
  zero-filling about 14%; the 1-channel first conv itself about 1%.
- Standing in for an AVX2-only CPU, `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` (both frameworks' oneDNN and
  torch's own kernels kept to AVX2; `auto` then picks fp32 and the first line says why): Keras 106.3 img/s, hw3
  120.1 img/s fp32, **1.13x Keras** (77.6 with --system-malloc, 0.73x), fernet_fullres 303 (266). An emulation on
  Zen 4's cores, not a Zen 3. Measured again on another day (--rounds 5): Keras 118.5, hw3 128.7 (85% of the
  matmul rate, which AVX-512 does not raise on Zen 4: 196 GFLOP/s capped, 192 not): 1.09x.
- Where that fp32 step goes under the AVX2 cap (torch.profiler, 4 steps): the convolutions take 87% (backward
  63%, forward 24%), the 64-channel conv at 48x48 alone about 45% (its backward at about 130 GFLOP/s, the
  128-channel 24x24 conv's at about 200). ReLU's backward is 3%, BatchNorm 3%, the rest 7%. Both frameworks run the same oneDNN
  convolutions, so even with every other op fused away this step would be at most 1.15x faster: the 1.2x goal
  over Keras there rests on the convolutions, not on fusing what lies between them.
- That conv's weight gradient alone (aten.convolution_backward, batch 128, 2 threads): 135 GFLOP/s under the cap,
  207 without it; the same in either memory format and at batch 32 or 64. Written as nine matmuls of the output
  gradient against shifted views of the padded batch (no copies), it ran at 78 GFLOP/s (111 for the 128-channel
  conv at 24x24, against oneDNN's 163): a 64x64 result summed over 320,000 rows is no shape for a matmul, so
  torch offers no faster path to that gradient there.
- In PyTorch the convolutions take ~62% of an fp32 step (before the allocator); ReLU's backward 8%, BatchNorm 11%,
  pooling, dropout and zero-filling most of the rest.
- torch.compile of hw3 compiles in 20-30 s there but steps at 0.94x (fp32) and 0.80x (bf16) the eager rate.
- Batch 256 is slower per image than 128 (activations leave the caches); 64 is as fast or a little faster.
- On a shared, oversubscribed machine, 1 thread often trains faster in wall time than 2 (OpenMP threads wait for
  each other at every op when one of them is descheduled).

On a 2-core Intel Xeon with AMX (amx_bf16, avx512_bf16), torch 2.13, TensorFlow 2.21, alternated in one run, before
fercore.allocator (so with glibc's malloc unmapping freed activations):
- With nn.Dropout, hw3 trained at 76.6 img/s in fp32 and 174.5 in bf16 (2.3x); the homework's Keras hw3 at 84.4-90.3
  img/s: 0.85x Keras in fp32, 1.93x in bf16. fernet_fullres: 198.8 / 384.3 img/s (1.9x).
- The profile of that bf16 step: convolutions 51%, then nn.Dropout's Bernoulli draws 12% (one 32-bit draw per
  activation, on one thread), BatchNorm 12%, pooling 6%, ReLU 6%. fercore.dropout draws a byte per activation
  instead. Its gain is within this machine's noise: four A/B runs of hw3's step, alternated in one process, gave
  1.17, 1.01, 0.99 and 1.18x in bf16 and 1.02, 1.13, 1.03 and 1.10x in fp32.
- With fercore.dropout, this benchmark: hw3 77.6 img/s in fp32 and 172.3 in bf16, Keras 86.1-87.9 img/s: 0.88x
  Keras in fp32, 1.96x in bf16 (the goal is 2x). fernet_fullres: 168.2 / 354.7 img/s.
- bf16 runs at 106-117% of the fp32 matmul rate (180-210 GFLOP/s), fp32 training at 40-55% of it.
"""

import argparse
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from fercore.allocator import keep_freed_memory
from fercore.models import build_model, count_flops, model_names, relus_in_place
from fercore.precision import autocast, choose_precision, describe_cpu
from fercore.transforms import AugmentConfig, augment_batch

MATMUL_SIZE = 2048
FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class Best:
    """Best (highest) rate seen over rounds, by wall and by CPU time."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def add(self, work: float, timer: Timer):
        self.wall = max(self.wall, work / timer.wall)
        self.cpu = max(self.cpu, work / max(timer.cpu, 1e-9))


def matmul_round(a: torch.Tensor, best: Best, reps: int = 2):
    with Timer() as timer:
        for _ in range(reps):
            a @ a
    best.add(2 * MATMUL_SIZE ** 3 * reps / 1e9, timer)


def training_step(model: nn.Module, batch: int, memory_format, fused_adam: bool, precision):
    """A closure doing one forward + backward + Adam step on a fixed random batch, the forward in `precision`."""
    model = relus_in_place(model).to(memory_format=memory_format).train()  # as fercore.training trains it
    x = torch.randn(batch, 1, 48, 48).contiguous(memory_format=memory_format)
    y = torch.randint(0, 7, (batch,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_adam or None)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast("cpu", precision):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
    return step


def bench_training(name: str, memory_format, precision, args, matmul: Best, a: torch.Tensor) -> dict:
    model = build_model(name)
    flops = count_flops(model)
    step = training_step(model, args.batch, memory_format, args.fused_adam, precision)
    step()  # warm-up: oneDNN builds its kernels on the first call
    best = Best()
    slow = precision.name == "bf16" and "emulated" in precision.reason
    rounds, steps = (1, args.bf16_steps) if slow else (args.rounds, args.steps)
    for _ in range(rounds):
        matmul_round(a, matmul)
        with Timer() as timer:
            for _ in range(steps):
                step()
        best.add(args.batch * steps, timer)
    return {"model": name, "precision": precision.name, "params": sum(p.numel() for p in model.parameters()), "flops": flops,
            "rate": best}


def bench_augment(args) -> Best:
    x = torch.rand(args.batch, 1, 48, 48)
    config = AugmentConfig.parse(args.augment)
    generator = torch.Generator().manual_seed(0)
    augment_batch(x, config, generator)
    best = Best()
    for _ in range(args.rounds):
        with Timer() as timer:
            for _ in range(10):
                augment_batch(x, config, generator)
        best.add(10 * args.batch, timer)
    return best


def keras_rate(args) -> float:
    """img/s of the homework's Keras hw3 on the same threads and batch, from bench_keras.py under args.keras."""
    script = Path(__file__).with_name("bench_keras.py")
    done = subprocess.run([args.keras, str(script), "--threads", str(args.threads), "--batch", str(args.batch),
                           "--steps", str(max(args.steps, 3)), "--rounds", str(args.rounds)],
                          capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("keras_img_per_s"))
    print(line)
    return float(line.split()[1])


def print_keras_ratios(keras: float, rows) -> None:
    print()
    print(f"hw3 in Keras (train_on_batch, best before/after the rows above): {keras:.1f} img/s")
    for fmt, row in rows:
        if row["model"] == "hw3":
            print(f"  fercore hw3 {fmt} {row['precision']}: {row['rate'].wall / keras:.2f}x Keras")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="hw3,fernet_fullres", help=f"comma-separated, from {', '.join(model_names())}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per configuration; the best counts")
    parser.add_argument("--steps", type=int, default=3, help="training steps per round")
    parser.add_argument("--formats", default="channels_last,contiguous", help="channels_last and/or contiguous")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    parser.add_argument("--bf16-steps", type=int, default=1,
                        help="steps of the one bf16 round on a CPU without native bf16")
    parser.add_argument("--fused-adam", action="store_true", help="Adam(fused=True): one kernel for all parameters")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc as it is (fercore.allocator not applied): freed memory unmapped")
    parser.add_argument("--keras", metavar="PYTHON",
                        help="an interpreter with TensorFlow: time the homework's Keras hw3 (bench_keras.py) as the peer")
    parser.add_argument("--augment", default="flip=0.5,shift=0.1,rotate=10,zoom=0.1,erase=0.25")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    memory_kept = not args.system_malloc and keep_freed_memory()  # as fercore.training trains, where glibc allows
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    matmul = Best()
    for _ in range(2):
        matmul_round(a, matmul)

    keras = []  # the peer's rates, measured before and after fercore's rows: the best counts
    if args.keras:
        keras.append(keras_rate(args))
    rows = []
    for name in args.models.split(","):
        for precision in args.precisions.split(","):
            choice = choose_precision(precision.strip(), "cpu")
            for fmt in args.formats.split(","):
                rows.append((fmt, bench_training(name.strip(), FORMATS[fmt.strip()], choice, args, matmul, a)))
    augment = bench_augment(args)
    if args.keras:
        keras.append(keras_rate(args))

    print(describe_cpu())
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, best of {args.rounds} rounds"
          f"{', fused Adam' if args.fused_adam else ''}"
          f"{', freed memory kept' if memory_kept else ', system malloc (freed memory unmapped)'}")
    print(f"fp32 matmul {MATMUL_SIZE}x{MATMUL_SIZE}: {matmul.wall:.0f} GFLOP/s wall, "
          f"{matmul.cpu:.0f} GFLOP/s per CPU-s")
    print()
    header = (f"{'model':12} {'format':14} {'precision':9} {'params':>9} {'fwd MFLOP':>9} {'img/s':>7} {'train GFLOP/s':>13} "
              f"{'of matmul':>9} {'img/CPU-s':>9} {'of matmul (CPU)':>15}")
    print(header)
    print("-" * len(header))
    for fmt, row in rows:
        rate, train_flops = row["rate"], 3 * row["flops"]
        achieved, achieved_cpu = rate.wall * train_flops / 1e9, rate.cpu * train_flops / 1e9
        print(f"{row['model']:12} {fmt:14} {row['precision']:9} {row['params']:>9,} {row['flops'] / 1e6:>9.0f} {rate.wall:>7.1f} "
              f"{achieved:>13.1f} {achieved / matmul.wall:>9.0%} {rate.cpu:>9.1f} {achieved_cpu / matmul.cpu:>15.0%}")
    if keras:
        print_keras_ratios(max(keras), rows)
    fastest = max(row["rate"].wall for _, row in rows)
    print()
    print(f"augment_batch({args.augment}) on batches of {args.batch}: {augment.wall:,.0f} img/s "
          f"({augment.wall / fastest:.0f}x the fastest training above, so training never waits for it)")


if __name__ == "__main__":
    main()
