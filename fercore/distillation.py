"""Knowledge distillation: a run's loss also follows the answers of trained checkpoints, its teachers.

The teachers' answer for a training image is their softmax probabilities averaged over the teachers and over the
image and its mirror (flip TTA), in fp32. They are computed once, before the first epoch, for every training image
(not for each augmented copy: augmentation keeps the expression, so the clean image's answer stands for it), and
kept in the run folder, so that a resume needs neither the teachers' files nor their time again, and computes what
a run never stopped computes.

The loss is (1 - weight) x the usual cross-entropy with the label + weight x the cross-entropy between the teachers'
and the model's probabilities, both softened at `temperature` and the term scaled by temperature^2, which keeps its
gradients' size as the temperature changes (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fercore.checkpoints import CheckpointError, load_model
from fercore.evaluation import predict_probabilities
from fercore.labels import NUM_CLASSES
from fercore.runs import TEACHER_ANSWERS_FILE, atomic_write


def teacher_probabilities(teachers: list[str], pixels: np.ndarray) -> np.ndarray:
    """The teachers' mean flip-averaged probabilities, float32 (N, classes), for uint8 faces (N, 48, 48): the
    Compare page's ensemble of them (compare.Comparison.ensemble_probabilities) with flip TTA."""
    answers = []
    for path in teachers:
        teacher = load_model(path)
        answers.append(predict_probabilities(teacher.model, teacher.normalizer, pixels, tta=True))
    return np.mean(answers, axis=0).astype(np.float32)


def save_probabilities(run_dir, probabilities: np.ndarray) -> None:
    """Keep the teachers' probabilities in the run folder (atomically and durably, as a checkpoint)."""
    atomic_write(Path(run_dir) / TEACHER_ANSWERS_FILE, lambda f: np.save(f, probabilities), durable=True)


def saved_probabilities(run_dir, n_images: int) -> np.ndarray | None:
    """The run folder's teacher probabilities, None when it has none; an unreadable file or one of the wrong
    shape is an error that says how to have the teachers run again."""
    path = Path(run_dir) / TEACHER_ANSWERS_FILE
    if not path.exists():
        return None
    again = "delete it to have the run's teachers compute them again"
    try:
        probabilities = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable teacher probabilities ({e}); {again}") from None
    if probabilities.shape != (n_images, NUM_CLASSES):
        raise CheckpointError(f"{path}: teacher probabilities of shape {probabilities.shape}, but the run trains "
                              f"on {n_images} images of {NUM_CLASSES} classes; {again}")
    return probabilities.astype(np.float32)


def soft_targets(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teachers' probabilities softened at `temperature` (1: as they are)."""
    return torch.softmax(torch.log(probabilities.clamp_min(1e-8)) / temperature, dim=1)


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                      reduction: str = "mean") -> torch.Tensor:
    """The cross-entropy between soft targets (from soft_targets) and the model's probabilities at `temperature`,
    times temperature^2; the mean (or the sum) over the batch's rows."""
    per_row = -(targets * F.log_softmax(logits / temperature, dim=1)).sum(1)
    total = per_row.mean() if reduction == "mean" else per_row.sum()
    return total * temperature * temperature
