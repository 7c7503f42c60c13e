"""Faces the labels got wrong: FER2013's one label per face against FER+'s ten annotators (Barsoum et al. 2016).

FER2013's labels are noisy; FER+ had ten people vote on every face (`FerDataset.ferplus_votes`, columns
fercore.labels.FERPLUS_COLUMNS). The FER+ majority here is the most-voted column, mapped to FER2013's 7 classes.
A face has no majority, and is left out of every comparison, when two columns tie for the most votes, when the
most-voted column is contempt, unknown or "not a face" (NF: FER2013 has no such class), or when it has no votes.

A face is disputed when its FER2013 label differs from the FER+ majority; disputed faces are ranked by the
majority's share of the votes (9 of 10 annotators saying Happy against a Sad label first). Where the model also
sides with FER+, the label is a likely mislabel: two independent readers of the face disagree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from fercore.labels import FERPLUS_COLUMNS, FERPLUS_INDEX_OF_CLASS, NUM_CLASSES

NO_MAJORITY = -1
# FER+ column -> FER2013 class, NO_MAJORITY for contempt, unknown and NF
CLASS_OF_FERPLUS_COLUMN = tuple(FERPLUS_INDEX_OF_CLASS.index(c) if c in FERPLUS_INDEX_OF_CLASS else NO_MAJORITY
                                for c in range(len(FERPLUS_COLUMNS)))


def ferplus_majority(votes) -> tuple[np.ndarray, np.ndarray]:
    """(FER2013 class of the FER+ majority, int64 (N,), NO_MAJORITY where there is none; the majority's share of
    the face's votes, float64 (N,), 0 where there is none) for FER+ vote rows (N, 10)."""
    counts = np.asarray(votes, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[1] != len(FERPLUS_COLUMNS):
        raise ValueError(f"FER+ votes must be (N, {len(FERPLUS_COLUMNS)}) counts, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("FER+ votes must be counts >= 0")
    top = counts.max(1)
    column = counts.argmax(1)
    total = counts.sum(1)
    unique_top = (counts == top[:, None]).sum(1) == 1
    majority = np.asarray(CLASS_OF_FERPLUS_COLUMN, dtype=np.int64)[column]
    majority[~unique_top | (total == 0)] = NO_MAJORITY
    share = np.divide(top, total, out=np.zeros(len(counts)), where=total > 0)
    share[majority == NO_MAJORITY] = 0.0
    return majority, share


def _confusion(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    flat = np.bincount(rows * NUM_CLASSES + columns, minlength=NUM_CLASSES * NUM_CLASSES)
    return flat.reshape(NUM_CLASSES, NUM_CLASSES)


@dataclass(eq=False)
class LabelAudit:
    """FER2013's labels, the FER+ majority and a model's predictions, aligned with an Evaluation's rows."""

    rows: np.ndarray          # int64 (N,) dataset rows (Evaluation.rows)
    labels: np.ndarray        # int64 (N,) FER2013's label
    majority: np.ndarray      # int64 (N,) FER+ majority class, NO_MAJORITY where there is none
    share: np.ndarray         # float64 (N,) the majority's share of the votes
    votes: np.ndarray         # uint8 (N, 10)
    predictions: np.ndarray   # int64 (N,) the model's class
    probabilities: np.ndarray  # float32 (N, 7)

    @property
    def has_majority(self) -> np.ndarray:
        return self.majority != NO_MAJORITY

    @property
    def excluded(self) -> int:
        """Faces without a FER+ majority (a tie, contempt, unknown, NF or no votes), left out of every figure."""
        return int((~self.has_majority).sum())

    @cached_property
    def disputed(self) -> np.ndarray:
        """Positions (into this audit's arrays) of the faces whose FER2013 label differs from the FER+ majority,
        the most certain majority first (ties: dataset order)."""
        positions = np.flatnonzero(self.has_majority & (self.majority != self.labels))
        return positions[np.argsort(-self.share[positions], kind="stable")]

    @property
    def likely_mislabeled(self) -> np.ndarray:
        """bool (len(disputed),): the model sides with FER+ against FER2013's label."""
        return self.predictions[self.disputed] == self.majority[self.disputed]

    @property
    def pair_counts(self) -> np.ndarray:
        """int64 (7, 7): faces per (FER2013 label row, FER+ majority column); the diagonal is where they agree."""
        keep = self.has_majority
        return _confusion(self.labels[keep], self.majority[keep])

    @property
    def ferplus_confusion(self) -> np.ndarray:
        """int64 (7, 7): rows the FER+ majority, columns the model's prediction, faces with a majority only."""
        keep = self.has_majority
        return _confusion(self.majority[keep], self.predictions[keep])

    @property
    def fer2013_confusion(self) -> np.ndarray:
        """int64 (7, 7): rows FER2013's label, columns the prediction, on the same faces as ferplus_confusion."""
        keep = self.has_majority
        return _confusion(self.labels[keep], self.predictions[keep])

    @property
    def ferplus_accuracy(self) -> float:
        """The model's accuracy against the FER+ majority (faces with one)."""
        keep = self.has_majority
        return float((self.predictions[keep] == self.majority[keep]).mean()) if keep.any() else float("nan")

    @property
    def fer2013_accuracy(self) -> float:
        """The model's accuracy against FER2013's labels on the same faces, so the two compare."""
        keep = self.has_majority
        return float((self.predictions[keep] == self.labels[keep]).mean()) if keep.any() else float("nan")


def audit_labels(result, dataset) -> LabelAudit:
    """A LabelAudit of an Evaluation (fercore.evaluation) of `dataset`, which must carry labels and FER+ votes."""
    from fercore.evaluation import _check_dataset

    _check_dataset(result, dataset)
    if result.labels is None:
        raise ValueError(f"{dataset.source or 'this data set'} has no FER2013 labels to check against FER+")
    if dataset.ferplus_votes is None:
        raise ValueError(f"{dataset.source or 'this data set'} has no FER+ votes (fer2013.npz and the shipped "
                         "data/fer2013_test.npz carry them)")
    votes = dataset.ferplus_votes[result.rows]
    majority, share = ferplus_majority(votes)
    return LabelAudit(rows=result.rows, labels=result.labels, majority=majority, share=share, votes=votes,
                      predictions=result.predictions, probabilities=result.probabilities)


def describe_votes(votes, top: int = 3) -> str:
    """'FER+ neutral 6, sadness 3, anger 1': a face's most-voted FER+ columns, for a gallery caption."""
    ranked = sorted(((int(v), name) for v, name in zip(votes, FERPLUS_COLUMNS) if v), reverse=True)[:top]
    return "FER+ " + ", ".join(f"{name} {v}" for v, name in ranked) if ranked else "FER+ no votes"
