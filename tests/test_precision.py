"""Precision: what `auto` picks and why, and a real bf16 training run that resumes bit-exactly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from fercore import checkpoints
from fercore.checkpoints import load_model, read_checkpoint
from fercore.data import load_dataset
from fercore.evaluation import evaluate_checkpoint
from fercore.precision import choose_precision, cpu_bf16, cpu_flags
from fercore.training import TrainConfig, resume, train

from fixtures import tiny_fer_csv

torch.set_num_threads(1)

AVX2_FLAGS = {"sse4_2", "avx", "avx2", "fma", "f16c"}  # this project's AMD EPYC, abridged
SAPPHIRE_RAPIDS_FLAGS = AVX2_FLAGS | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_auto_is_fp32_on_a_cpu_without_native_bf16():
    choice = choose_precision("auto", "cpu", capability="AVX2", flags=AVX2_FLAGS)
    assert choice.name == "fp32" and choice.dtype == torch.float32
    assert choice.describe() == "precision: fp32 (this CPU has no native bf16: AVX2 only)"
    # AVX-512 without its BF16 extension is no better
    assert choose_precision("auto", "cpu", capability="AVX512", flags=AVX2_FLAGS | {"avx512f"}).name == "fp32"


@pytest.mark.parametrize("capability, flags, named", [
    ("AVX512", SAPPHIRE_RAPIDS_FLAGS, "avx512_bf16"),  # /proc/cpuinfo says so, whatever torch dispatches to
    ("AVX512", AVX2_FLAGS | {"avx512f", "avx512_bf16"}, "avx512_bf16"),
    ("AMX", set(), "AMX"),  # torch's dispatch level alone (no /proc/cpuinfo, e.g. not Linux)
])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(capability, flags, named):
    choice = choose_precision("auto", "cpu", capability=capability, flags=flags)
    assert choice.name == "bf16" and choice.dtype == torch.bfloat16
    assert choice.reason.startswith("this CPU runs bf16 natively") and named in choice.reason


def test_a_onednn_capped_below_bf16_makes_auto_fp32_on_a_bf16_cpu():
    """ONEDNN_MAX_CPU_ISA=AVX2 (how bench_train stands in for an AVX2-only CPU) leaves oneDNN no bf16 kernels."""
    capped = choose_precision("auto", "cpu", capability="AVX512", flags=SAPPHIRE_RAPIDS_FLAGS, onednn_cap="avx2")
    assert capped.describe() == "precision: fp32 (oneDNN is capped at AVX2 by ONEDNN_MAX_CPU_ISA, which has no bf16)"
    for level in ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL", ""):  # caps at or above bf16, or none
        assert choose_precision("auto", "cpu", capability="AVX512", flags=SAPPHIRE_RAPIDS_FLAGS,
                                onednn_cap=level).name == "bf16"


def test_cuda_follows_the_device_and_explicit_choices_win():
    assert choose_precision("auto", "cuda", cuda_bf16=True).name == "bf16"
    assert choose_precision("auto", "cuda", cuda_bf16=False).name == "fp32"
    with pytest.raises(ValueError, match="no bf16"):
        choose_precision("bf16", "cuda", cuda_bf16=False)
    assert choose_precision("fp32", "cpu", capability="AMX", flags=SAPPHIRE_RAPIDS_FLAGS).name == "fp32"
    slow = choose_precision("bf16", "cpu", capability="AVX2", flags=AVX2_FLAGS)
    assert slow.name == "bf16" and "emulated and slow" in slow.reason
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        choose_precision("fp16", "cpu")


def test_this_machines_answer_agrees_with_its_flags():
    native, reason = cpu_bf16(onednn_cap="")  # the CPU itself, whatever ONEDNN_MAX_CPU_ISA says
    flags = cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    assert native == bool({"amx_bf16", "avx512_bf16"} & flags or "AMX" in capability)
    assert choose_precision("auto", "cpu", onednn_cap="").name == ("bf16" if native else "fp32")
    assert capability in reason or any(f in reason for f in flags)
    if "avx2" in flags and not {"avx512_bf16", "amx_bf16"} & flags:  # this project's AMD EPYC
        expected = f"precision: fp32 (this CPU has no native bf16: {capability} only)"
        assert choose_precision("auto", "cpu", onednn_cap="").describe() == expected


def test_cpu_flags_reads_a_cpuinfo_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


# ------------------------------------------------------------------------------------------- a real bf16 run

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """42 faces of 48x48 to train on and 14 to validate on: small, because bf16 is emulated on AVX2."""
    return load_dataset(tiny_fer_csv(tmp_path_factory.mktemp("bf16"), n_train=42, n_val=14), cache=False)


def bf16_config(**overrides) -> TrainConfig:
    base = dict(model="fernet", epochs=3, batch_size=14, threads=1, device="cpu", seed=2, precision="bf16",
                augment={"flip": 0.5, "shift": 0.1})
    return TrainConfig(**{**base, **overrides})


def test_bf16_training_learns_keeps_fp32_state_and_resumes_bit_exactly(tiny_data, tmp_path):
    straight = train(bf16_config(), tmp_path / "straight", dataset=tiny_data)
    assert straight.precision.name == "bf16"
    train(bf16_config(), tmp_path / "stopped", dataset=tiny_data, stop_after=2)
    resumed = resume(tmp_path / "stopped", dataset=tiny_data)
    assert len(resumed.history) == 3

    a, b = (read_checkpoint(tmp_path / run / checkpoints.LAST) for run in ("straight", "stopped"))
    assert a["precision"] == b["precision"] == "bf16"
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), f"{key} differs after resume"
        if value.is_floating_point():  # autocast only: master weights stay fp32
            assert value.dtype == torch.float32, key
    moments = [s for state in a["optimizer_state"]["state"].values() for s in (state["exp_avg"], state["exp_avg_sq"])]
    assert moments and all(m.dtype == torch.float32 for m in moments)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert [h["precision"] for h in a["history"]] == ["bf16"] * 3
    # it trains: the loss falls and the weights moved from their initialisation
    assert a["history"][-1]["train_loss"] < a["history"][0]["train_loss"]


def test_bf16_forward_differs_from_fp32_only_by_rounding(tiny_data, tmp_path):
    """The same checkpoint evaluated both ways: bf16 really ran (outputs differ) and is close (8-bit mantissa)."""
    train(bf16_config(epochs=1, precision="fp32"), tmp_path / "run", dataset=tiny_data)
    loaded = load_model(tmp_path / "run" / "last.pt")
    fp32 = evaluate_checkpoint(loaded, tiny_data, use_cache=False, precision="fp32")
    bf16 = evaluate_checkpoint(loaded, tiny_data, use_cache=False, precision="bf16")
    assert (fp32.computed_in, bf16.computed_in) == ("fp32", "bf16")
    gap = np.abs(fp32.probabilities - bf16.probabilities).max()
    assert 0 < gap < 0.05


@pytest.mark.skipif(choose_precision("auto", "cpu").name != "bf16",
                    reason=f"speed check for CPUs with native bf16; {cpu_bf16()[1]}")
def test_native_bf16_is_not_slower_than_fp32(tiny_data):
    from fercore.models import build_model

    model = build_model("fernet").eval()
    x = torch.rand(128, 1, 48, 48)

    def seconds(choice):
        from fercore.precision import autocast

        with torch.inference_mode(), autocast("cpu", choose_precision(choice, "cpu")):
            model(x)
            started = time.perf_counter()
            for _ in range(5):
                model(x)
        return time.perf_counter() - started

    assert seconds("bf16") < 1.5 * seconds("fp32")
