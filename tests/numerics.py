"""Tolerances for comparing two float32 computations, derived from the arithmetic rather than from one machine.

Two correct float32 computations of the same value differ when their kernels add in other orders (AVX2 or
AVX-512, another batch blocking or memory layout). Rounding errors of n added terms grow like a random walk,
eps * sqrt(n) of the terms' magnitude, so that is the tolerance: it depends on the work done, not on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn

EPS32 = float(np.finfo(np.float32).eps)


def summed_terms(model: nn.Module, points: int = 1) -> int:
    """About how many products one output (or one value of an input-gradient map) adds up: every weighted layer's
    fan-in (its forward dot products and the backward ones through it), for each of the `points` passes a method
    averages (IG's path points, SmoothGrad's noisy copies, TTA's mirror)."""
    return points * sum(m.weight[0].numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def fp32_tolerance(model: nn.Module, points: int = 1) -> float:
    """How far two correct float32 computations through `model` may differ, as a share of the result's largest
    magnitude: eps * sqrt(summed terms). E.g. 1.7e-5 for hw3's input gradient, 4.9e-5 for its 8-point IG."""
    return EPS32 * math.sqrt(summed_terms(model, points))
