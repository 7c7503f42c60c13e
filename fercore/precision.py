"""Numeric precision of training and evaluation: fp32, or bf16 autocast where the hardware runs bf16 natively.

bf16 is autocast only: the forward pass (and so its backward) computes in bf16 where autocast allows it, while the
master weights, their gradients and Adam's moments stay fp32. On a CPU without native bf16 (AVX2 only) bf16 is
emulated and 10-15x slower than fp32, so `auto` picks it only where it pays: a CPU with AMX or AVX-512 BF16, or a
CUDA device that supports it. Saliency and filter images always run in fp32 and never come here.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fercore.config import PRECISIONS

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with bf16 arithmetic
# oneDNN (which runs the convolutions) can be capped below the CPU's level with ONEDNN_MAX_CPU_ISA, as a benchmark
# does to stand in for an older CPU; under these caps it has no bf16 kernels, so bf16 is emulated and slow.
ONEDNN_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


@dataclass(frozen=True)
class PrecisionChoice:
    name: str    # "fp32" or "bf16": what runs
    reason: str  # why, in words

    def describe(self) -> str:
        return f"precision: {self.name} ({self.reason})"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32


def cpu_flags(cpuinfo: Path | str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read, e.g. not on Linux)."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_name(cpuinfo: Path | str = "/proc/cpuinfo") -> str:
    """The CPU's model name as /proc/cpuinfo gives it (lscpu's 'Model name'), or the platform's processor."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def describe_cpu() -> str:
    """One line naming this CPU, its instruction-set level and whether it runs bf16 natively (benchmarks print it)."""
    flags = cpu_flags()
    amx = "yes" if "amx_bf16" in flags else "no"
    return (f"{cpu_name()}, {os.cpu_count()} cores, ISA {torch.backends.cpu.get_cpu_capability()}, "
            f"avx512_bf16 {'yes' if 'avx512_bf16' in flags else 'no'}, AMX {amx}: {cpu_bf16()[1]}")


def cpu_bf16(capability: str | None = None, flags: set[str] | None = None,
             onednn_cap: str | None = None) -> tuple[bool, str]:
    """(whether this CPU runs bf16 natively, a few words saying how or why not). The inputs can be injected;
    by default they are torch's dispatch level (AVX2, AVX512, ...), /proc/cpuinfo's flags and ONEDNN_MAX_CPU_ISA."""
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    flags = cpu_flags() if flags is None else flags
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "") if onednn_cap is None else onednn_cap
    if onednn_cap.upper() in ONEDNN_CAPS_WITHOUT_BF16:
        return False, f"oneDNN is capped at {onednn_cap.upper()} by ONEDNN_MAX_CPU_ISA, which has no bf16"
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if "AMX" in capability.upper() or native:
        return True, f"this CPU runs bf16 natively: {', '.join(native) or capability}"
    return False, f"this CPU has no native bf16: {capability} only"


def choose_precision(requested: str, device: torch.device | str, *, capability: str | None = None,
                     flags: set[str] | None = None, onednn_cap: str | None = None,
                     cuda_bf16: bool | None = None) -> PrecisionChoice:
    """What `requested` (auto, fp32 or bf16) means on `device`, and why. The hardware facts can be injected
    (capability, flags, onednn_cap: see cpu_bf16; cuda_bf16: torch.cuda.is_bf16_supported())."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        why = "this CUDA device supports bf16" if native else "this CUDA device has no bf16"
        if requested == "bf16" and not native:
            raise ValueError(f"precision bf16 was asked for, but {why}: use fp32 or auto")
    else:
        native, why = cpu_bf16(capability, flags, onednn_cap)
    if requested == "fp32":
        return PrecisionChoice("fp32", "asked for")
    if requested == "bf16":
        return PrecisionChoice("bf16", "asked for" if native else f"asked for; {why}, so it is emulated and slow")
    return PrecisionChoice("bf16" if native else "fp32", why)


def autocast(device: torch.device | str, choice: PrecisionChoice):
    """The context a forward pass runs in: bf16 autocast on `device`, or nothing for fp32."""
    if choice.name != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
