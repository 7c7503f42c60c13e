"""Several processes training one run: torchrun's environment, the process group and DistributedDataParallel.

`torchrun --nproc_per_node=N -m fercore train ...` starts N copies of the trainer. Each reads the same data and
draws the same epoch order, augmentation and dropout masks (all seeded from (seed, epoch)), takes its rows of every
global batch (`World.rows`) and averages gradients with the others (DDP). So a run's batches, and with them its
recipe, are the same on 1 or N processes; only rank 0 writes files. Without torchrun's variables this is a world of
one process, and the trainer runs exactly as it always did.

Not bit-identical to one process: DDP sums the ranks' gradients in another order than one backward pass sums the
batch, and BatchNorm normalises each rank's rows by their own statistics unless `--sync-batchnorm` (CUDA only:
PyTorch's SyncBatchNorm has no CPU kernel).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from fercore.dropout import Dropout, keep_mask
from fercore.layout import memory_format_of

WEIGHT_DIGEST_DIR = "FERCORE_WEIGHT_DIGEST_DIR"  # set: every rank writes rank<R>.sha256 of its weights there


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes: torchrun's RANK, WORLD_SIZE and LOCAL_RANK."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run's files and prints."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of `n` (the first n % size ranks take one more): the ranks' rows
        together are the batch, in order."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def current_world() -> World:
    """The world torchrun describes in the environment (one process when it did not start this one)."""
    env = os.environ
    return World(rank=int(env.get("RANK", 0)), size=int(env.get("WORLD_SIZE", 1)),
                 local_rank=int(env.get("LOCAL_RANK", 0)))


def check_batch_size(batch_size: int, world: World) -> None:
    """The batch size is global (what one process would take), so it must split evenly over the processes."""
    if batch_size % world.size:
        raise ValueError(f"batch size {batch_size} does not split over {world.size} processes: choose a multiple "
                         f"of {world.size} (it is the global batch; each process takes batch size / {world.size})")


def check_last_batch(n_train: int, batch_size: int, world: World) -> None:
    """Every rank needs at least one row of every batch, the epoch's last (n_train % batch_size) included."""
    last = n_train - (math.ceil(n_train / batch_size) - 1) * batch_size
    if last < world.size:
        raise ValueError(f"each epoch's last batch holds {last} of the {n_train} training images, fewer than the "
                         f"{world.size} processes: choose another batch size")


def process_device(device: torch.device, world: World) -> torch.device:
    """The device of this process: with several processes on CUDA, each its own GPU (LOCAL_RANK)."""
    if world.size > 1 and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    return device


def init(world: World, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU), from torchrun's MASTER_ADDR and MASTER_PORT."""
    if world.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank,
                                world_size=world.size, device_id=device if device.type == "cuda" else None)


def teardown() -> None:
    """Wait for every rank (so none leaves while rank 0 still writes), then leave the process group."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class ShardedDropout(Dropout):
    """Dropout that gives this rank's rows the mask one process would draw for the whole batch: every rank draws
    the global batch's mask from the same seeded generator and keeps its own rows. So the masks do not depend on
    the number of processes."""

    def __init__(self, p: float, batch: dict):
        super().__init__(p)
        self.batch = batch  # {"size": global rows, "rows": this rank's slice}, set every step

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return keep_mask((self.batch["size"], *x.shape[1:]), self.p, memory_format_of(x), x.device)[self.batch["rows"]]


def training_view(model: nn.Module, world: World, device: torch.device, batch: dict,
                  sync_batchnorm: bool = False) -> nn.Module:
    """What a rank trains: a copy of `model`'s modules sharing its very parameters and buffers (so the optimizer,
    checkpoints and snapshots keep using `model`, whose structure and signature stay those of the architecture),
    with ShardedDropout, optionally SyncBatchNorm, inside DistributedDataParallel. `model` itself in one process."""
    if world.size == 1:
        if sync_batchnorm:
            raise ValueError("--sync-batchnorm needs several processes (torchrun --nproc_per_node=N)")
        return model
    if sync_batchnorm and device.type != "cuda":
        raise ValueError("--sync-batchnorm needs CUDA devices: PyTorch's SyncBatchNorm does not run on the CPU")
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    view = copy.deepcopy(model, memo=shared)
    for parent in view.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                setattr(parent, name, ShardedDropout(child.p, batch))
    if sync_batchnorm:
        view = nn.SyncBatchNorm.convert_sync_batchnorm(view)
    return nn.parallel.DistributedDataParallel(view, device_ids=[device] if device.type == "cuda" else None)


def share_buffers(model: nn.Module, world: World) -> None:
    """Give every rank rank 0's buffers (BatchNorm's running statistics, which each rank updates from its own rows
    during an epoch), so that all ranks validate and save the same model."""
    if world.size > 1 and dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def sum_over_ranks(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor summed over the ranks (an epoch's loss and correct counts); unchanged in one process."""
    if dist.is_initialized():
        for tensor in tensors:
            dist.all_reduce(tensor)
    return tensors


def weights_digest(state: dict) -> str:
    """A hash of a model state's names, dtypes and values: equal exactly when the weights are."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_weights_digest(model: nn.Module, world: World) -> None:
    """When $FERCORE_WEIGHT_DIGEST_DIR is set, write this rank's weights_digest there (to check that every rank
    ends with the same model); nothing otherwise."""
    folder = os.environ.get(WEIGHT_DIGEST_DIR)
    if folder:
        path = os.path.join(folder, f"rank{world.rank}.sha256")
        with open(path, "w") as f:
            f.write(weights_digest(model.state_dict()) + "\n")


def cuda_device_count() -> int:
    """How many CUDA devices this machine has (0 without CUDA): the most processes a local run can use."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
