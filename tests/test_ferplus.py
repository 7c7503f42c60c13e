"""FER+ against FER2013: the majority on hand-made vote rows, the ranking and the scores against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from fercore.data import FerDataset
from fercore.evaluation import Evaluation
from fercore.ferplus import NO_MAJORITY, audit_labels, describe_votes, ferplus_majority
from fercore.labels import CLASS_NAMES, FERPLUS_COLUMNS

COLUMN = {name: k for k, name in enumerate(FERPLUS_COLUMNS)}


def vote_row(**counts) -> list[int]:
    row = [0] * len(FERPLUS_COLUMNS)
    for name, count in counts.items():
        row[COLUMN[name]] = count
    return row


@pytest.mark.parametrize("counts, majority, share", [
    (dict(happiness=8, neutral=2), "Happy", 0.8),
    (dict(neutral=4, sadness=3, anger=3), "Neutral", 0.4),      # the most votes, not more than half
    (dict(anger=6, disgust=4), "Angry", 0.6),
    (dict(disgust=5, anger=1), "Disgust", 5 / 6),              # shares of the face's own votes (not always 10)
    (dict(fear=7, surprise=3), "Fear", 0.7),
    (dict(sadness=10), "Sad", 1.0),
    (dict(surprise=9, fear=1), "Surprise", 0.9),
    (dict(happiness=5, neutral=5), None, 0.0),                 # a tie: no majority
    (dict(contempt=6, neutral=4), None, 0.0),                  # FER2013 has no contempt
    (dict(unknown=5, sadness=2), None, 0.0),
    (dict(NF=10), None, 0.0),                                  # not a face
    (dict(), None, 0.0),                                       # no votes
])
def test_the_ferplus_majority_maps_to_fer2013s_classes_or_to_none(counts, majority, share):
    classes, shares = ferplus_majority(np.array([vote_row(**counts)], np.uint8))
    expected = NO_MAJORITY if majority is None else CLASS_NAMES.index(majority)
    assert classes.tolist() == [expected] and shares[0] == pytest.approx(share)


def test_bad_vote_arrays_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        ferplus_majority(np.zeros((3, 8)))
    with pytest.raises(ValueError, match=">= 0"):
        ferplus_majority(-np.ones((1, 10)))


def random_audit(n: int = 400, seed: int = 0):
    """A data set with random labels, votes and predictions, and its Evaluation."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    votes = rng.integers(0, 6, (n, 10)).astype(np.uint8)
    votes[::7] = 0
    votes[::7, COLUMN["happiness"]] = 10                       # some unanimous faces, so shares tie
    probabilities = rng.dirichlet(np.ones(7), n).astype(np.float32)
    dataset = FerDataset(pixels=np.zeros((n, 48, 48), np.uint8), labels=labels, split=np.full(n, 2),
                         ids=np.arange(n), ferplus_votes=votes, source="random.npz")
    result = Evaluation(probabilities=probabilities, predictions=probabilities.argmax(1), labels=labels,
                        rows=np.arange(n), tta=False, data_fingerprint=dataset.fingerprint())
    return dataset, result, audit_labels(result, dataset)


def brute_majority(votes) -> tuple[int, float]:
    """One row, by the definition: the unique most-voted column, if it is one of FER2013's classes."""
    to_class = {"neutral": 6, "happiness": 3, "surprise": 5, "sadness": 4, "anger": 0, "disgust": 1, "fear": 2}
    top = max(votes)
    winners = [FERPLUS_COLUMNS[k] for k, v in enumerate(votes) if v == top]
    if top == 0 or len(winners) > 1 or winners[0] not in to_class:
        return NO_MAJORITY, 0.0
    return to_class[winners[0]], top / sum(votes)


def test_the_disputed_faces_are_ranked_as_a_brute_force_sort():
    dataset, result, audit = random_audit()
    rows = []
    for i, votes in enumerate(dataset.ferplus_votes.tolist()):
        majority, share = brute_majority(votes)
        if majority != NO_MAJORITY and majority != dataset.labels[i]:
            rows.append((-share, i))
    assert audit.disputed.tolist() == [i for _, i in sorted(rows)]
    assert len(audit.disputed) > 50 and audit.share[audit.disputed[0]] == 1.0
    assert audit.excluded == sum(brute_majority(v)[0] == NO_MAJORITY for v in dataset.ferplus_votes.tolist())
    likely = [i for i in audit.disputed if result.predictions[i] == brute_majority(dataset.ferplus_votes[i])[0]]
    assert audit.disputed[audit.likely_mislabeled].tolist() == likely


def test_the_scores_against_fer_plus_and_fer2013_are_recounts_on_the_faces_with_a_majority():
    dataset, result, audit = random_audit(seed=1)
    majorities = [brute_majority(v)[0] for v in dataset.ferplus_votes.tolist()]
    kept = [i for i, m in enumerate(majorities) if m != NO_MAJORITY]
    assert audit.ferplus_accuracy == pytest.approx(np.mean([result.predictions[i] == majorities[i] for i in kept]))
    assert audit.fer2013_accuracy == pytest.approx(np.mean([result.predictions[i] == result.labels[i] for i in kept]))
    ferplus, fer2013, pairs = (np.zeros((7, 7), int) for _ in range(3))
    for i in kept:
        ferplus[majorities[i], result.predictions[i]] += 1
        fer2013[result.labels[i], result.predictions[i]] += 1
        pairs[result.labels[i], majorities[i]] += 1
    assert (audit.ferplus_confusion == ferplus).all() and (audit.fer2013_confusion == fer2013).all()
    assert (audit.pair_counts == pairs).all()
    assert audit.pair_counts.sum() - np.trace(audit.pair_counts) == len(audit.disputed)


def test_an_audit_needs_votes_labels_and_the_evaluated_data():
    dataset, result, _ = random_audit(n=20)
    other = FerDataset(pixels=dataset.pixels + 1, labels=dataset.labels, split=dataset.split, ids=dataset.ids,
                       ferplus_votes=dataset.ferplus_votes, source="other.npz")
    with pytest.raises(ValueError, match="not the one the evaluation was computed on"):
        audit_labels(result, other)
    no_votes = FerDataset(pixels=dataset.pixels, labels=dataset.labels, split=dataset.split, ids=dataset.ids,
                          source="plain.csv")
    with pytest.raises(ValueError, match="plain.csv has no FER\\+ votes"):
        audit_labels(result, no_votes)
    result.labels = None
    with pytest.raises(ValueError, match="no FER2013 labels"):
        audit_labels(result, dataset)


def test_describe_votes_names_the_most_voted_columns():
    assert describe_votes(vote_row(neutral=6, sadness=3, anger=1)) == "FER+ neutral 6, sadness 3, anger 1"
    assert describe_votes([0] * 10) == "FER+ no votes"
