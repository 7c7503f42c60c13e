"""The training loop: fit, validate every epoch, keep `last`, `best` and a few epochs' snapshots, resume exactly.

Exact resume: every source of randomness (shuffling, augmentation, dropout) is reseeded at the start of each
epoch from (seed, epoch), and the learning rate is a pure function of the step. So an epoch computes the same
thing whether the run went straight through or was stopped and resumed before it.

Several processes (torchrun, fercore.distributed): every rank draws the same order, augmentation and dropout masks
and trains its rows of each global batch; rank 0 alone writes the run's files. In one process none of that runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from fercore import checkpoints, distributed
from fercore.allocator import keep_freed_memory
from fercore.config import TrainConfig
from fercore.data import DataError, FerDataset, load_dataset
from fercore.distillation import (distillation_loss, save_probabilities, saved_probabilities, soft_targets,
                                  teacher_probabilities)
from fercore.labels import PRIVATE_TEST, PUBLIC_TEST, SPLIT_NAMES, TRAINING
from fercore.models import build_model, relus_in_place
from fercore.precision import autocast, choose_precision
from fercore.runs import BEST, CONFIG_FILE, HISTORY_FILE, LAST, PROGRESS_FILE, can_resume, write_json
from fercore.snapshots import is_snapshot_epoch, save_snapshot
from fercore.transforms import AugmentConfig, Normalizer, augment_batch, balanced_sample_weights, class_weights

@dataclass
class Progress:
    """What a progress callback receives, several times per epoch and once at each epoch's end."""

    epoch: int  # 1-based, the epoch in progress
    epochs: int
    batch: int
    batches: int
    elapsed_s: float  # since this process started training
    eta_s: float | None
    train_loss: float
    train_acc: float
    epoch_done: bool = False
    record: dict | None = None  # the history record, when epoch_done


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at a global step, as a pure function (so a resumed run needs no scheduler state)."""
    t = min(step / max(total_steps, 1), 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * t))
    if config.schedule == "onecycle":  # 30% warm-up from lr/25, then cosine down to lr/1e4 (as PyTorch's OneCycleLR)
        warm = 0.3
        if t < warm:
            return config.lr * (1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * t / warm)))
        return config.lr * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm))))
    return config.lr


def has_training_split(dataset: FerDataset) -> bool:
    """Whether the data has Training rows; without them (the shipped file) a run is only split_roles' demo."""
    return bool((dataset.split == TRAINING).any())


def split_roles(dataset: FerDataset) -> tuple[FerDataset, FerDataset, str]:
    """Training and validation sets, and a sentence saying which splits they are.

    The shipped file has no Training rows: its demo trains on PublicTest and validates on PrivateTest.
    """
    if dataset.labels is None:
        raise DataError(f"{dataset.source}: has no labels, so it cannot be trained on (is it a test.csv?)")
    has = {code: bool((dataset.split == code).any()) for code in (TRAINING, PUBLIC_TEST, PRIVATE_TEST)}
    if has[TRAINING]:
        val_code = PUBLIC_TEST if has[PUBLIC_TEST] else PRIVATE_TEST
        train, val = dataset.select_split(TRAINING), dataset.select_split(val_code)
        note = f"training on {SPLIT_NAMES[TRAINING]} ({len(train)}), validating on {SPLIT_NAMES[val_code]} ({len(val)})"
    elif has[PUBLIC_TEST] and has[PRIVATE_TEST]:
        train, val = dataset.select_split(PUBLIC_TEST), dataset.select_split(PRIVATE_TEST)
        note = (f"demo: this data has no Training split, so training on PublicTest ({len(train)}) "
                f"and validating on PrivateTest ({len(val)})")
    else:
        raise DataError(f"{dataset.source}: needs a Training split or both PublicTest and PrivateTest")
    if len(val) == 0:
        raise DataError(f"{dataset.source}: the validation split is empty")
    return train, val, note


class Trainer:
    """One run folder: builds or restores model, optimizer and history, then trains epoch by epoch."""

    def __init__(self, run_dir, config: TrainConfig, state: dict | None = None,
                 dataset: FerDataset | None = None, on_progress: Callable[[Progress], None] | None = None):
        self.run_dir = Path(run_dir)
        self.config = config
        self.on_progress = on_progress
        config.validate()
        self.world = distributed.current_world()
        distributed.check_batch_size(config.batch_size, self.world)
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        keep_freed_memory()  # each step reuses the last one's activations' memory: no page faults
        self.device = distributed.process_device(pick_device(config.device), self.world)
        if self.device.type == "cuda":  # fixed input shapes: let cuDNN pick its fastest convolution algorithms
            torch.backends.cudnn.benchmark = True
        self.precision = choose_precision(config.precision, self.device)
        self.dataset = dataset if dataset is not None else load_dataset(config.data, val_fraction=config.val_fraction,
                                                                         seed=config.seed)
        self.train_set, self.val_set, self.split_note = split_roles(self.dataset)
        distributed.check_last_batch(len(self.train_set), config.batch_size, self.world)
        distributed.init(self.world, self.device)
        self._setup(state)

    def _setup(self, state: dict | None) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        self.model = relus_in_place(build_model(c.model)).to(self.device).to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.augment = AugmentConfig.from_dict(c.augment)
        train_labels = torch.as_tensor(self.train_set.labels)
        self.class_weights = class_weights(train_labels).to(self.device) if c.balance == "weights" else None
        self.loss_fn = nn.CrossEntropyLoss(weight=self.class_weights, label_smoothing=c.label_smoothing)
        # Several processes: each sums its rows' losses and divides by the whole batch's count (or weight), so the
        # ranks' gradients add up to one process's gradient of the batch's mean loss.
        self.loss_sum = nn.CrossEntropyLoss(weight=self.class_weights, label_smoothing=c.label_smoothing,
                                            reduction="sum")
        self.sample_weights = balanced_sample_weights(train_labels) if c.balance == "sampler" else None
        self.train_x = torch.as_tensor(self.train_set.pixels).to(self.device)
        self.train_y = train_labels.to(self.device)
        self.val_x = torch.as_tensor(self.val_set.pixels).to(self.device)
        self.val_y = torch.as_tensor(self.val_set.labels).to(self.device)
        self.fingerprint = self.dataset.fingerprint()
        if state is None:
            self.normalizer = Normalizer.fit(c.normalize, self.train_set.pixels)
            self.history, self.best_val_acc = [], -1.0
        else:
            if state.get("data_fingerprint") != self.fingerprint:
                raise DataError(f"{self.dataset.source}: the data differs from the data this run was trained on "
                                f"(fingerprint {self.fingerprint} != {state.get('data_fingerprint')})")
            self.normalizer = Normalizer.from_dict(state["normalizer"])
            self.model.load_state_dict(state["model_state"])
            if "optimizer_state" in state:  # shipped checkpoints may leave it out to save space
                self.optimizer.load_state_dict(state["optimizer_state"])
            else:
                self.split_note += "; this checkpoint has no optimizer state, so Adam's moments start afresh"
            self.history = list(state["history"])
            trained_in = state.get("precision", "fp32")  # checkpoints from before precision was recorded: fp32
            if trained_in != self.precision.name:
                self.split_note += (f"; trained in {trained_in} so far, continuing in {self.precision.name} "
                                    "(not bit-identical to a run that stayed in one precision)")
            self.best_val_acc = max((h["val_acc"] for h in self.history), default=-1.0)
            trained_on = state.get("world_size", 1)  # checkpoints from before it was recorded: one process
            if trained_on != self.world.size:
                self.split_note += (f"; trained on {trained_on} process(es) so far, continuing on {self.world.size}: "
                                    "each batch is split over the processes differently, so BatchNorm statistics "
                                    "and float sums change (not bit-identical to a run that stayed on "
                                    f"{trained_on})")
        self.teacher_targets = self._teacher_targets(state)
        self.batch = {"size": 0, "rows": slice(None), "denominator": 1.0}  # this step's, when several processes
        self.net = distributed.training_view(self.model, self.world, self.device, self.batch, c.sync_batchnorm)

    def _teacher_targets(self, state: dict | None) -> torch.Tensor | None:
        """The soft targets of the run's teachers for each training image (fercore.distillation), None without
        teachers. A resumed run reads the answers it saved; a new one computes them (the teachers run once) and
        keeps them in `answers_to_save` until fit() writes the run folder."""
        c = self.config
        self.answers_to_save = None
        if not c.teachers:
            return None
        answers = None if state is None else saved_probabilities(self.run_dir, len(self.train_set))
        if answers is None:
            t0 = time.time()
            answers = self.answers_to_save = teacher_probabilities(c.teachers, self.train_set.pixels)
            self.split_note += (f"; learns from {len(c.teachers)} teacher(s) too, whose answers on the "
                                f"{len(self.train_set)} training images took {time.time() - t0:.0f} s")
        return soft_targets(torch.from_numpy(answers), c.distill_temperature).to(self.device)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.config.batch_size)

    def _epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.train_set)
        if self.sample_weights is not None:  # class-balanced: draw with replacement, rare classes more often
            return torch.multinomial(self.sample_weights, n, replacement=True, generator=generator)
        return torch.randperm(n, generator=generator)

    def train_epoch(self, epoch: int, started: float) -> dict:
        """Train epoch `epoch` (0-based) and return its history record."""
        c, t0 = self.config, time.time()
        torch.manual_seed(c.seed * 1_000_003 + epoch)  # dropout and any other global randomness
        generator = torch.Generator().manual_seed(c.seed * 1_000_003 + epoch)
        aug_generator = torch.Generator(device=self.device).manual_seed(c.seed * 7919 + epoch)
        order = self._epoch_order(generator).to(self.device)
        self.net.train()
        # Running sums stay on the device: reading them (.item()) waits for the GPU, so it is done only when
        # progress is reported (about once a second), not every batch.
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, reported = 0, time.time()
        batches, total_steps = self.steps_per_epoch, self.steps_per_epoch * c.epochs
        for b in range(batches):
            idx = order[b * c.batch_size:(b + 1) * c.batch_size]
            lr = learning_rate(c, epoch * batches + b, total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x = augment_batch(self.normalizer(self.train_x[idx]), self.augment, aug_generator)
            teacher = self.teacher_targets[idx] if self.teacher_targets is not None else None
            x, y, teacher = self._rows_of_this_process(x, self.train_y[idx], teacher)
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):  # the weights and Adam's state stay fp32
                logits = self.net(x)
                loss, batch_loss = self._batch_loss(logits.float(), y, teacher)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total_loss += batch_loss * len(idx)
            correct += (logits.argmax(1) == y).sum()
            seen += len(idx)
            if time.time() - reported >= 0.5 or b + 1 == batches:
                # rank 0's own sums, scaled to the whole batch: an estimate while the epoch runs (exact in one
                # process); the epoch's record below adds up every rank's
                n = self.world.size
                self._report(epoch, b + 1, batches, started, t0, total_loss.item() * n / seen,
                             correct.item() * n / seen)
                reported = time.time()
        distributed.sum_over_ranks(total_loss, correct)
        distributed.share_buffers(self.model, self.world)
        val_loss, val_acc = self.validate()
        return {"epoch": epoch + 1, "train_loss": total_loss.item() / seen, "train_acc": correct.item() / seen,
                "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "seconds": time.time() - t0,
                "precision": self.precision.name}

    def _rows_of_this_process(self, x: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None):
        """This process's rows of an augmented global batch, its labels and its teachers' soft targets (all of
        them in one process). Every rank augments the whole batch, so each image gets the random draws it gets in
        one process."""
        if self.world.size == 1:
            return x, y, teacher
        rows = self.world.rows(len(y))
        denominator = self.class_weights[y].sum() if self.class_weights is not None else len(y)
        self.batch.update(size=len(y), rows=rows, denominator=denominator)
        return x[rows], y[rows], teacher[rows] if teacher is not None else None

    def _batch_loss(self, logits: torch.Tensor, y: torch.Tensor,
                    teacher: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to backpropagate, this process's part of the batch's mean loss, detached). With several
        processes the parts add up to the mean, and DDP averages gradients, so the loss is the part times N.
        With teachers, the loss is a weighted sum of the label's and the teachers' (fercore.distillation)."""
        c = self.config
        if self.world.size == 1:
            loss = self.loss_fn(logits, y)
            if teacher is not None:
                loss = (1 - c.distill_weight) * loss + c.distill_weight * distillation_loss(
                    logits, teacher, c.distill_temperature)
            return loss, loss.detach()
        part = self.loss_sum(logits, y) / self.batch["denominator"]
        if teacher is not None:
            part = (1 - c.distill_weight) * part + c.distill_weight * distillation_loss(
                logits, teacher, c.distill_temperature, reduction="sum") / self.batch["size"]
        return part * self.world.size, part.detach()

    @torch.inference_mode()
    def validate(self, batch_size: int = 512) -> tuple[float, float]:
        self.model.eval()
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        total, correct = 0.0, 0
        for i in range(0, len(self.val_x), batch_size):
            x = self.normalizer(self.val_x[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
            y = self.val_y[i:i + batch_size]
            with autocast(self.device, self.precision):
                logits = self.model(x).float()
            total += loss_fn(logits, y).item()
            correct += (logits.argmax(1) == y).sum().item()
        return total / len(self.val_x), correct / len(self.val_x)

    def _report(self, epoch, batch, batches, started, epoch_t0, loss, acc, record=None) -> None:
        if not self.world.is_main:
            return
        per_batch = (time.time() - epoch_t0) / max(batch, 1)
        remaining = (batches - batch) + batches * (self.config.epochs - epoch - 1)
        progress = Progress(epoch=epoch + 1, epochs=self.config.epochs, batch=batch, batches=batches,
                            elapsed_s=time.time() - started, eta_s=per_batch * remaining,
                            train_loss=loss, train_acc=acc, epoch_done=record is not None, record=record)
        # The progress file lets any viewer (the app, another tab, another process) follow the run.
        if record is not None or time.time() - self._progress_written >= 1.0:
            write_json(self.run_dir / PROGRESS_FILE, {**asdict(progress), "updated": time.time()})
            self._progress_written = time.time()
        if self.on_progress is not None:
            self.on_progress(progress)

    def state(self) -> dict:
        """Everything a checkpoint holds, as tensors and plain values (loadable with weights_only=True).

        No scheduler or RNG state: resume needs neither (see the module docstring), so none is written."""
        return {"model_name": self.config.model, "architecture": checkpoints.architecture_signature(self.model),
                "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer_state": self.optimizer.state_dict(),
                "epoch": len(self.history), "history": self.history, "config": asdict(self.config),
                "normalizer": self.normalizer.to_dict(), "data_fingerprint": self.fingerprint,
                "precision": self.precision.name, "world_size": self.world.size}

    def fit(self, stop_after: int | None = None) -> list[dict]:
        """Train from the current epoch to config.epochs (or stop after `stop_after` epochs in total)."""
        main = self.world.is_main  # the one process that writes the run's files
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / CONFIG_FILE, asdict(self.config))
            if self.answers_to_save is not None:  # before any epoch's last.pt, which a resume reads them beside
                save_probabilities(self.run_dir, self.answers_to_save)
        self._progress_written = 0.0
        started = time.time()
        end = self.config.epochs if stop_after is None else min(stop_after, self.config.epochs)
        for epoch in range(len(self.history), end):
            record = self.train_epoch(epoch, started)
            self.history.append(record)
            if main:
                self._save_epoch(epoch, record, started)
            self.best_val_acc = max(self.best_val_acc, record["val_acc"])
        distributed.write_weights_digest(self.model, self.world)
        return self.history

    def _save_epoch(self, epoch: int, record: dict, started: float) -> None:
        """Write the run's files after `epoch` (0-based): snapshot, last.pt, best.pt, history and progress."""
        if is_snapshot_epoch(epoch + 1, self.config.epochs):  # before last.pt: a resume redoes the epoch if lost
            save_snapshot(self.run_dir, epoch + 1, self.model)
        state = self.state()
        checkpoints.save_checkpoint(state, self.run_dir / LAST)
        if record["val_acc"] > self.best_val_acc:
            checkpoints.save_checkpoint(state, self.run_dir / BEST)
        write_json(self.run_dir / HISTORY_FILE, self.history)
        self._report(epoch, self.steps_per_epoch, self.steps_per_epoch, started, time.time(),
                     record["train_loss"], record["train_acc"], record=record)


def new_run(config: TrainConfig, run_dir, *, dataset: FerDataset | None = None, on_progress=None) -> Trainer:
    """A Trainer for a new run in `run_dir`, which must not hold a run yet."""
    run_dir = Path(run_dir)
    if can_resume(run_dir):
        raise checkpoints.CheckpointError(f"{run_dir} already holds a run: resume it, or choose another folder")
    return Trainer(run_dir, config, dataset=dataset, on_progress=on_progress)


def resumed_run(run_dir, *, epochs: int | None = None, overrides: dict | None = None,
                dataset: FerDataset | None = None, on_progress=None) -> Trainer:
    """A Trainer restored from a run folder's last.pt. `epochs` is the new total; `overrides` may change
    where the data lives, the threads, the device or the precision (on the same machine, threads and precision,
    the result is bit-identical to a run never stopped)."""
    run_dir = Path(run_dir)
    state = checkpoints.read_checkpoint(run_dir / LAST)
    config = TrainConfig.from_dict(state["config"])
    if epochs is not None:
        config.epochs = epochs
    for key, value in (overrides or {}).items():
        if key not in ("data", "threads", "device", "precision"):
            raise ValueError(f"resume cannot change {key!r}: start a new run instead")
        setattr(config, key, value)
    return Trainer(run_dir, config, state=state, dataset=dataset, on_progress=on_progress)


def train(config: TrainConfig, run_dir, *, dataset=None, on_progress=None, stop_after=None) -> Trainer:
    """Start a new run and train it to config.epochs."""
    trainer = new_run(config, run_dir, dataset=dataset, on_progress=on_progress)
    trainer.fit(stop_after=stop_after)
    return trainer


def resume(run_dir, *, epochs=None, dataset=None, on_progress=None, stop_after=None) -> Trainer:
    """Continue a run from its last.pt up to `epochs` in total (None keeps the original)."""
    trainer = resumed_run(run_dir, epochs=epochs, dataset=dataset, on_progress=on_progress)
    trainer.fit(stop_after=stop_after)
    return trainer
