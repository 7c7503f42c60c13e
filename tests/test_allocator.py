"""fercore.allocator: once a process keeps freed memory, each training step reuses the last step's pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Real training steps of hw3 on batches of 64 (its 48x48 activations are 38 MB each, over the 32 MB from which
# glibc maps a block of its own and unmaps it on free), in a fresh process: the page faults of each of the last three
# of ten.
PROBE = """
import resource, sys, torch
from torch import nn
from fercore.models import build_model, relus_in_place
if sys.argv[1] == "keep":
    from fercore.allocator import keep_freed_memory
    assert keep_freed_memory()
torch.manual_seed(0)
model = relus_in_place(build_model("hw3")).to(memory_format=torch.channels_last).train()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
faults = []
for step in range(10):
    x, y = torch.randn(64, 1, 48, 48).contiguous(memory_format=torch.channels_last), torch.randint(0, 7, (64,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults[-3:])
"""
ACTIVATION_PAGES = 64 * 64 * 48 * 48 * 4 // 4096  # one 48x48 activation of the batch, in 4 KB pages


def page_faults(probe: str, mode: str) -> list[int]:
    """The page faults a probe prints on its last line, run in a fresh process."""
    done = subprocess.run([sys.executable, "-c", probe, mode], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    return [int(count) for count in done.stdout.splitlines()[-1].split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="keep_freed_memory tunes glibc's malloc (Linux)")
def test_training_steps_reuse_the_last_steps_memory_without_page_faults():
    kept, system = page_faults(PROBE, "keep"), page_faults(PROBE, "system")
    if sum(system) < 10 * ACTIVATION_PAGES // 512:
        pytest.skip(f"the kernel maps with huge pages here ({sum(system)} faults in three steps): too few to compare")
    # unmapped on free, each step's large activations fault in again: about 35 activations' pages in three steps
    assert sum(kept) < 0.1 * sum(system), (kept, system)
    # The heap may still grow in a late step (by 1,000-20,000 pages, now and then, as its free blocks fragment), but
    # a typical step reuses the last one's memory and faults in nothing: the median of the three steps.
    median = sorted(kept)[1]
    assert median <= ACTIVATION_PAGES, f"a typical step faulted {median} pages of {kept} (one activation: " \
                                       f"{ACTIVATION_PAGES})"


# A Trainer made in a fresh process, then a 64 MB block asked for and freed six times: the page faults of the last
# three. (The second may still fault: a small allocation can take the front of the first freed block.)
TRAINER_PROBE = """
import resource, sys, tempfile, torch
if sys.argv[1] == "trainer":
    from fercore.config import TrainConfig
    from fercore.training import Trainer
    with tempfile.TemporaryDirectory() as run:
        Trainer(run, TrainConfig(model="fernet", epochs=1, threads=1))
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 * 2**20)
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults[-3:])
"""
BLOCK_PAGES = 64 * 2**20 // 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="keep_freed_memory tunes glibc's malloc (Linux)")
def test_a_trainer_makes_its_process_keep_freed_memory():
    kept, without = sum(page_faults(TRAINER_PROBE, "trainer")), sum(page_faults(TRAINER_PROBE, "plain"))
    if without < BLOCK_PAGES:
        pytest.skip(f"the kernel maps with huge pages here ({without} faults for three 64 MB blocks): too few")
    assert kept < 0.1 * without, (kept, without)  # the freed block stayed in the heap and came back without faults
