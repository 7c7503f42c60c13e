"""Dropout whose mask costs one random byte per activation instead of one 32-bit draw.

On the CPU, PyTorch's Bernoulli sampler (nn.Dropout's) draws a 32-bit number per element on one thread: hw3's first
dropout (128 x 64 x 24 x 24 activations a batch) took ~90 ms forward and backward of a ~730 ms bf16 training step
on a 2-core Intel Xeon, 12% of the step (benchmarks/bench_train.py). Here the mask is random 64-bit words read as
bytes, 8 activations a draw: ~30 ms. A byte is dropped when it is below 256 * p, which has probability p exactly
where 256 * p is whole (0.25 and 0.5, hw3's rates); other rates are rounded to the nearest 1/256 (fernet's 0.3 drops
77 / 256 = 30.08%), and the kept activations are scaled by 1 / (1 - that rate), so the expected output is the input.
The words come from PyTorch's global generator, as nn.Dropout's draws do: seeding it (fercore.training reseeds every
epoch) makes the masks reproducible.
"""

import math

import torch
from torch import nn

from fercore.layout import memory_format_of

LEVELS = 256  # the values of one random byte


def drop_rate(p: float) -> float:
    """The rate a Dropout(p) really drops at: p rounded to the nearest 1/256."""
    return round(p * LEVELS) / LEVELS


def keep_mask(shape: tuple[int, ...], p: float, layout: torch.memory_format = torch.contiguous_format,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of `shape`, True (kept) with probability 1 - drop_rate(p), filled in the memory order of
    `layout`, so that its rows are the same whether drawn for a whole batch or for its first rows."""
    count = math.prod(shape)
    words = torch.empty((count + 7) // 8, dtype=torch.int64, device=device).random_(-2 ** 63, None)
    strides = torch.empty(shape, memory_format=layout, device="meta").stride()
    return words.view(torch.uint8)[:count].as_strided(shape, strides) >= round(p * LEVELS)


class Dropout(nn.Dropout):
    """nn.Dropout (same name, settings and printed form, so architecture signatures do not change) with the
    byte mask above. Its `inplace` setting is ignored: the output is always a new tensor."""

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return keep_mask(tuple(x.shape), self.p, memory_format_of(x), x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rate = drop_rate(self.p)
        if not self.training or rate == 0:
            return x
        if rate == 1:
            return x * 0
        return x.mul(self.mask(x)).mul_(1 / (1 - rate))
