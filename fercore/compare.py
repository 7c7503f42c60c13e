"""Runs side by side: a run's recipe in words, and a table of several runs that shows only what differs.

    recipe(loaded.config, loaded.history)       # {"optimizer": "Adam", "learning rate": "0.001", ...}
    table = compare_runs([a, b], [evaluation_a, evaluation_b], labels=["hw3", "fernet"])
    table.settings                              # the settings that differ, e.g. ["model", "learning rate", ...]
    table.rows(), table.to_csv()
    table.ensemble_accuracy                     # the runs together: their probabilities averaged per image
    confusion_difference(evaluation_a, evaluation_b)   # B - A, row-normalized

torch-free: it reads a checkpoint's `config` (fercore.training.TrainConfig as a dict) and `history` (one record per
epoch) and fercore.evaluation results, so the app can describe a run before torch loads.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fercore.runs import BEST, LAST, best_record
from fercore.labels import CLASS_NAMES

NOT_RECORDED = "not recorded"

NORMALIZATION_TEXT = {"none": "none (pixels 0..255)", "scale255": "/255", "standardize":
                      "standardize (training pixels' mean and std)", "per_image": "per image (zero mean, unit std)"}
SCHEDULE_TEXT = {"constant": "constant", "cosine": "cosine decay to 0",
                 "onecycle": "one-cycle (30% warm-up, then cosine down)"}
BALANCE_TEXT = {"none": "none", "weights": "class-weighted loss", "sampler": "class-balanced sampling"}
# Augmentations in fercore.transforms' order, with the unit their strength is read in.
AUGMENT_UNITS = {"flip": "", "shift": "", "rotate": "°", "zoom": "", "erase": ""}


def csv_text(rows: list[dict]) -> str:
    """Table rows (dicts, e.g. a run's history) as CSV text with a header; columns in first-seen order, so records
    that gained a field later still line up."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _number(value) -> str:
    """0.001 -> '0.001', 1e-4 -> '0.0001', 128 -> '128'; anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return NOT_RECORDED if value is None else str(value)
    return f"{value:.6f}".rstrip("0").rstrip(".") if 1e-6 <= abs(value) < 1 else f"{value:g}"


def augmentation_text(augment) -> str:
    """{'flip': 0.5, 'shift': 0.1, 'rotate': 10, 'zoom': 0.1} -> 'flip 0.5, shift 0.1, rotate 10°, zoom 0.1';
    only the augmentations that are on, 'none' when none is."""
    if not isinstance(augment, dict):
        return NOT_RECORDED if augment is None else str(augment)
    on = [(name, value) for name, value in augment.items() if isinstance(value, (int, float)) and value > 0]
    order = list(AUGMENT_UNITS)
    on.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    return ", ".join(f"{name} {_number(value)}{AUGMENT_UNITS.get(name, '')}" for name, value in on) or "none"


def duration_text(seconds: float) -> str:
    """42 -> '42 s', 822 -> '13.7 min', 5000 -> '1 h 23 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _seconds(history: list[dict]) -> float:
    return float(sum(r.get("seconds") or 0.0 for r in history if isinstance(r, dict)))


def _wall_time(history: list[dict]) -> str:
    if not history:
        return "no epoch yet"
    total = _seconds(history)
    return f"{duration_text(total)} ({duration_text(total / len(history))} per epoch)"


def _text(mapping: dict, value) -> str:
    return mapping.get(value, NOT_RECORDED if value is None else str(value))


def _device(config: dict, history: list[dict]) -> str:
    device = config.get("device")
    device = {"auto": "auto (CUDA if present, else CPU)", None: NOT_RECORDED}.get(device, device)
    threads = config.get("threads")
    threads = f", {threads} CPU threads" if isinstance(threads, int) else ""
    asked = config.get("precision", "fp32")  # fercore trained in fp32 before the precision was recorded
    # what the epochs computed in, which `auto` leaves to the machine
    ran = sorted({str(h["precision"]) for h in history if isinstance(h, dict) and "precision" in h} - {asked})
    return f"{device}{threads}, {asked}" + (f" ({' and '.join(ran)})" if ran else "")


def recipe(config: dict, history: list[dict]) -> dict[str, str]:
    """A run's training recipe in words, in a fixed order: optimizer, learning rate, schedule, batch size, epochs
    (done of planned), normalization, augmentation, class balance, label smoothing, weight decay, seed, device and
    precision, wall time (the sum of the epochs' seconds), and for a distilled run its teachers. A value the config
    lacks reads 'not recorded'."""
    config = config if isinstance(config, dict) else {}
    history = history if isinstance(history, list) else []
    planned = config.get("epochs")
    described = {
        "optimizer": str(config.get("optimizer", "Adam")),  # the only optimizer fercore.training has
        "learning rate": _number(config.get("lr")),
        "schedule": _text(SCHEDULE_TEXT, config.get("schedule")),
        "batch size": _number(config.get("batch_size")),
        "epochs": f"{len(history)} of {_number(planned)}" if planned is not None else str(len(history)),
        "normalization": _text(NORMALIZATION_TEXT, config.get("normalize")),
        "augmentation": augmentation_text(config.get("augment")),
        "class balance": _text(BALANCE_TEXT, config.get("balance")),
        "label smoothing": _number(config.get("label_smoothing")),
        "weight decay": _number(config.get("weight_decay")),
        "seed": _number(config.get("seed")),
        "device and precision": _device(config, history),
        "wall time": _wall_time(history),
    }
    teachers = config.get("teachers")
    if teachers and isinstance(teachers, list):  # a row only for the runs that had teachers (fercore.distillation)
        described["teachers"] = (f"{', '.join(run_label(str(t)) for t in teachers)} (weight "
                                 f"{_number(config.get('distill_weight'))}, temperature "
                                 f"{_number(config.get('distill_temperature'))})")
    return described


def training_data_text(config: dict) -> str:
    data = config.get("data") if isinstance(config, dict) else None
    return "shipped demo data (trains on PublicTest)" if data is None else Path(str(data)).name


def settings(config: dict, history: list[dict]) -> dict[str, str]:
    """What defines a run, for comparing runs: the model, the recipe without its outcomes (epochs done, wall time),
    the planned epochs (a schedule depends on them) and the training data file. The history says what precision
    `auto` computed in."""
    described = recipe(config, history)
    for outcome in ("epochs", "wall time"):
        described.pop(outcome)
    config = config if isinstance(config, dict) else {}
    return {"model": str(config.get("model", NOT_RECORDED)), **described,
            "planned epochs": _number(config.get("epochs")), "training data": training_data_text(config)}


def best_val_acc(history: list[dict]) -> float:
    best = best_record(history)
    return float(best["val_acc"]) if best else float("nan")


def run_label(path: str) -> str:
    """'checkpoints/hw3/last.pt' -> 'hw3' (a run folder's checkpoint goes by its folder), 'x/model.pt' -> 'model'."""
    p = Path(path)
    return p.parent.name if p.name in (BEST, LAST) and p.parent.name else p.stem


# ----------------------------------------------------------------------------------------------------------------
# Several runs

def _check_same_images(evaluations) -> None:
    first = evaluations[0]
    for other in evaluations[1:]:
        if (other.data_fingerprint, other.split, other.tta) != (first.data_fingerprint, first.split, first.tta):
            raise ValueError("runs can only be compared on the same images: the evaluations differ in data, split "
                             f"or TTA ({first.split}, tta {first.tta} vs {other.split}, tta {other.tta})")
    for evaluation in evaluations:
        if not evaluation.labeled:
            raise ValueError("comparing runs needs labelled data: the evaluated data set has no labels")


@dataclass(frozen=True)
class Comparison:
    """Several runs evaluated on the same images: one row each with only the settings that differ."""

    labels: list[str]
    run_settings: list[dict[str, str]]   # every setting of every run (see `settings`)
    epochs: list[int]
    best_val_accs: list[float]
    evaluations: list                    # fercore.evaluation.Evaluation, one per run

    @property
    def settings(self) -> list[str]:
        """The names of the settings whose values are not the same for every run, in recipe order."""
        names = list(self.run_settings[0]) if self.run_settings else []
        return [n for n in names if len({s.get(n) for s in self.run_settings}) > 1]

    def rows(self) -> list[dict]:
        """One dict per run: run, the differing settings, epochs, best validation accuracy, accuracy on the
        evaluated images (the same for every run), and recall of each class (Disgust's too), accuracies and recalls
        as fractions."""
        rows = []
        for k, evaluation in enumerate(self.evaluations):
            row = {"run": self.labels[k], **{n: self.run_settings[k][n] for n in self.settings},
                   "epochs": self.epochs[k], "best validation accuracy": self.best_val_accs[k],
                   "accuracy": evaluation.accuracy}
            row.update({f"{name} recall": float(r) for name, r in zip(CLASS_NAMES, evaluation.recall)})
            rows.append(row)
        return rows

    @property
    def ensemble_probabilities(self) -> np.ndarray:
        """(N, 7): each image's probabilities averaged over the runs, an ensemble with no forward pass of its own."""
        return np.mean([evaluation.probabilities for evaluation in self.evaluations], axis=0)

    @property
    def ensemble_accuracy(self) -> float:
        """The runs' accuracy together: the ensemble's most probable class against the labels."""
        return float(np.mean(self.ensemble_probabilities.argmax(1) == self.evaluations[0].labels))

    def ensemble_text(self) -> str:
        """One sentence: the ensemble's accuracy beside the best run's alone."""
        best = max(range(len(self.labels)), key=lambda k: self.evaluations[k].accuracy)
        return (f"**Together**, averaging the {len(self.labels)} checkpoints' probabilities for each face (an "
                f"ensemble), they get **{self.ensemble_accuracy:.1%}** of these images right, against "
                f"{self.evaluations[best].accuracy:.1%} for the best of them alone ({self.labels[best]}).")

    def to_csv(self) -> str:
        return csv_text(self.rows())


def compare_runs(runs: list, evaluations: list, labels: list[str] | None = None) -> Comparison:
    """Compare LoadedModels (fercore.checkpoints) by their Evaluations on the same images (same data, split, TTA).

    labels default to each run's folder name (or file name). ValueError when the lists do not pair up, when there
    is no run, or when the evaluations were made on different images or on unlabelled data.
    """
    if not runs:
        raise ValueError("nothing to compare: pick at least one run")
    if len(evaluations) != len(runs) or (labels is not None and len(labels) != len(runs)):
        raise ValueError(f"compare_runs needs one evaluation and one label per run: {len(runs)} runs, "
                         f"{len(evaluations)} evaluations, {'no' if labels is None else len(labels)} labels")
    _check_same_images(evaluations)
    labels = [run_label(run.path) for run in runs] if labels is None else [str(label) for label in labels]
    return Comparison(labels=labels, run_settings=[settings(run.config, run.history) for run in runs],
                      epochs=[len(run.history) for run in runs],
                      best_val_accs=[best_val_acc(run.history) for run in runs], evaluations=list(evaluations))


def confusion_difference(a, b) -> np.ndarray:
    """float64 (7, 7): B's row-normalized confusion matrix minus A's, rows true, columns predicted.

    Row-normalized (each row the shares of its true class), so an entry is the change in the share of class i
    predicted as j, in [-1, 1]; every row sums to 0, the diagonal is the change in recall. Both evaluations must be
    of the same images (ValueError otherwise), so counts would differ by the same row totals.
    """
    _check_same_images([a, b])
    return b.confusion_normalized - a.confusion_normalized
