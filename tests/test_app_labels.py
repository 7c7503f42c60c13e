"""The Labels page through AppTest, on the App tests' trained checkpoint and data (whose FER+ votes are random, so
many faces are disputed)."""

from __future__ import annotations

import numpy as np

from fercore.data import load_dataset
from fercore.ferplus import NO_MAJORITY, ferplus_majority
from fercore.labels import CLASS_NAMES

from test_app import classroom, env, on_data, open_app, predictions, texts  # noqa: F401 -- fixtures and helpers
from ui import keys, nav


def expected(classroom):
    """Brute force on the PrivateTest rows: FER+ majorities, disputed positions ranked, the model's predictions."""
    probs, pred, labels = predictions(classroom)
    votes = load_dataset(classroom["data"]).select_split("PrivateTest").ferplus_votes
    majority, share = ferplus_majority(votes)
    disputed = [i for i in range(len(labels)) if majority[i] not in (NO_MAJORITY, labels[i])]
    disputed.sort(key=lambda i: (-share[i], i))
    return pred, labels, majority, share, disputed


def gallery_captions(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("FER2013 **")]


def test_labels_page_counts_the_disputed_faces_and_shows_them_most_certain_first(env):
    pred, labels, majority, share, disputed = expected(env)
    at = open_app(nav.LABELS, **on_data(env))
    assert at.title[0].value == "Labels"
    likely = sum(pred[i] == majority[i] for i in disputed)
    assert (f"differs from the FER+ majority on **{len(disputed):,}**" in texts(at)
            and f"sides with FER+ on **{likely:,}**" in texts(at))
    assert f"{int((majority == NO_MAJORITY).sum())} have no FER+ majority" in texts(at)
    captions = gallery_captions(at)
    assert len(captions) == min(24, len(disputed))
    for caption, i in zip(captions, disputed):
        assert caption.startswith(f"FER2013 **{CLASS_NAMES[labels[i]]}** · FER+ **{CLASS_NAMES[majority[i]]}** "
                                  f"({share[i]:.0%})")
        assert caption.endswith(f"model {CLASS_NAMES[pred[i]]}" + (" ✓ FER+" if pred[i] == majority[i] else ""))

    at.toggle(key=keys.LABELS_MISLABELED).set_value(True).run()
    assert not at.exception
    assert len(gallery_captions(at)) == min(24, likely) and all(c.endswith("✓ FER+") for c in gallery_captions(at))


def test_labels_page_scores_the_model_against_fer2013_and_against_the_ferplus_majority(env):
    pred, labels, majority, _, _ = expected(env)
    kept = majority != NO_MAJORITY
    at = open_app(nav.LABELS, **on_data(env))
    assert [m.label for m in at.metric] == ["Accuracy against FER2013's labels"]
    assert at.metric[0].value == f"{(pred[kept] == labels[kept]).mean():.1%}"
    charts = len(at.get("plotly_chart"))
    at.toggle(key=keys.LABELS_FERPLUS).set_value(True).run()
    assert not at.exception and len(at.get("plotly_chart")) == charts + 1
    assert at.metric[1].label == "Accuracy against the FER+ majority"
    assert at.metric[1].value == f"{(pred[kept] == majority[kept]).mean():.1%}"


def test_labels_page_on_data_without_votes_says_so_in_one_red_box(env, tmp_path):
    data = load_dataset(env["data"])
    plain = tmp_path / "plain.npz"
    usage = np.array(data.split)
    np.savez(plain, pixels=data.pixels, emotion=data.labels, usage=usage)
    at = open_app(nav.LABELS, **on_data(env, **{keys.DATA_PATH: str(plain)}))
    assert not at.exception
    assert len(at.error) == 1 and "has no FER+ votes" in at.error[0].value
