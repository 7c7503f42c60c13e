"""Occlusion on a really trained model whose class is decided by one known region alone (the mouth), so what
covering should change is known in advance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fercore.checkpoints import load_model
from fercore.labels import PUBLIC_TEST, TRAINING
from fercore.occlusion import (REGIONS, cover, covered_prediction, occlusion_map, patch_masks, patch_positions,
                               region_box)

from fixtures import train_on_faces
from test_app import classroom, env  # noqa: F401 -- the App tests' trained checkpoint and data, as fixtures

SMILE, BLANK = 3, 0  # Happy when the mouth box is bright, Angry when it is noise like the rest


def mouth_faces(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 noise faces; half of them have a bright mouth box, which alone decides the class."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 120, size=(n, 48, 48)).astype(np.uint8)
    labels = np.where(np.arange(n) % 2 == 0, SMILE, BLANK)
    top, left, bottom, right = REGIONS["mouth"]
    pixels[labels == SMILE, top:bottom, left:right] = 230
    return pixels, labels


@pytest.fixture(scope="module")
def mouth_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("mouth")
    pixels, labels = mouth_faces(192, seed=0)
    usage = np.array([TRAINING] * 160 + [PUBLIC_TEST] * 32, dtype=np.uint8)
    # hw3_nobn: no BatchNorm, whose running statistics after a few dozen steps still leave an eval-mode fernet at
    # chance on this task (in train mode it is right), so the model the test inspects is the one that learned
    train_on_faces(root, pixels, labels, usage, root / "run", data_name="mouth.npz", model="hw3_nobn", epochs=3)
    loaded = load_model(root / "run")
    faces, truth = mouth_faces(8, seed=1)  # faces it never saw
    with torch.no_grad():
        assert (loaded.model(loaded.preprocess(faces)).argmax(1).numpy() == truth).all(), "the model did not learn"
    return loaded, faces, truth


def test_covering_the_deciding_region_flips_the_prediction_and_another_region_does_not(mouth_model):
    loaded, faces, truth = mouth_model
    for face, label in zip(faces, truth):
        if label != SMILE:
            continue
        before, mouth = covered_prediction(loaded, face, "mouth")
        _, eyes = covered_prediction(loaded, face, "eyes")
        assert before.argmax() == SMILE and mouth.argmax() == BLANK and eyes.argmax() == SMILE
        assert before.shape == (7,) and abs(before.sum() - 1) < 1e-5


def test_the_occlusion_maps_peak_lies_in_the_deciding_region(mouth_model):
    loaded, faces, truth = mouth_model
    smiles = faces[truth == SMILE]
    maps = occlusion_map(loaded.model, loaded.preprocess(smiles), SMILE)
    assert maps.shape == (len(smiles), 48, 48) and maps.dtype == np.float32
    top, left, bottom, right = REGIONS["mouth"]
    for drop in maps:
        row, col = np.unravel_index(drop.argmax(), drop.shape)
        assert top <= row < bottom and left <= col < right, (row, col)
        inside = np.zeros((48, 48), bool)
        inside[top:bottom, left:right] = True
        assert drop.max() > 0 and drop[inside].mean() > 5 * abs(drop[~inside].mean())


def one_patch_at_a_time(loaded, face: np.ndarray, target: int, patch: int, stride: int) -> np.ndarray:
    """The definition, by brute force: one forward pass per patch position, in the model's input units."""
    x = loaded.preprocess(face[None]).float()
    with torch.no_grad():
        clean = torch.softmax(loaded.model(x), 1)[0, target]
        total, count = torch.zeros(48, 48), torch.zeros(48, 48)
        for top in patch_positions(48, patch, stride):
            for left in patch_positions(48, patch, stride):
                occluded = x.clone()
                occluded[..., top:top + patch, left:left + patch] = x.mean()
                drop = clean - torch.softmax(loaded.model(occluded), 1)[0, target]
                total[top:top + patch, left:left + patch] += drop
                count[top:top + patch, left:left + patch] += 1
    return (total / count).numpy()


@pytest.mark.parametrize("patch, stride", [(8, 4), (6, 5), (11, 11)])
def test_the_batched_map_equals_a_one_patch_at_a_time_loop(mouth_model, patch, stride):
    loaded, faces, truth = mouth_model
    expected = one_patch_at_a_time(loaded, faces[0], int(truth[0]), patch, stride)
    batched = occlusion_map(loaded.model, loaded.preprocess(faces[:1]), int(truth[0]), patch=patch, stride=stride,
                            batch_size=7)  # several chunks
    np.testing.assert_allclose(batched[0], expected, atol=2e-5)


def test_the_predicted_class_is_the_default_target_and_the_model_is_left_as_it_was(mouth_model):
    loaded, faces, truth = mouth_model
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    default = occlusion_map(loaded.model, loaded.preprocess(faces[:2]))
    explicit = occlusion_map(loaded.model, loaded.preprocess(faces[:2]), truth[:2])
    np.testing.assert_allclose(default, explicit, atol=1e-6)
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not loaded.model.training


def test_patches_cover_every_pixel_and_reach_the_far_edge():
    assert patch_positions(48, 8, 4) == list(range(0, 41, 4))
    assert patch_positions(48, 10, 4) == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 38]
    masks = patch_masks(10, 4)
    assert masks.shape == (121, 48, 48) and (masks.sum(0) >= 1).all() and (masks.sum((1, 2)) == 100).all()


def test_cover_paints_the_region_with_the_faces_mean_and_nothing_else():
    face = np.random.default_rng(2).integers(0, 256, (48, 48)).astype(np.uint8)
    top, left, bottom, right = REGIONS["nose"]
    covered = cover(face, "nose")
    assert (covered[top:bottom, left:right] == round(face.mean())).all()
    outside = np.ones((48, 48), bool)
    outside[top:bottom, left:right] = False
    assert (covered[outside] == face[outside]).all() and covered.dtype == np.uint8
    assert (cover(face, (0, 0, 48, 2), fill=0)[:, :2] == 0).all()


@pytest.mark.parametrize("region, message", [("chin", "unknown region 'chin'"), ((10, 10, 5, 20), "non-empty"),
                                             ((0, 0, 49, 10), "inside the 48x48"), ((1, 2), "a name or")])
def test_a_bad_region_is_a_clear_error(region, message):
    with pytest.raises(ValueError, match=message):
        region_box(region)


def test_bad_patch_settings_and_fills_are_clear_errors():
    with pytest.raises(ValueError, match="patch must be 1..48"):
        patch_positions(48, 0, 4)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        patch_positions(48, 8, 0)
    with pytest.raises(ValueError, match="grey level must be 0..255"):
        cover(np.zeros((48, 48), np.uint8), "eyes", fill=300)


# ------------------------------------------------------------------------------------------ the Inspect page

def bar_heights(at, title: str) -> np.ndarray:
    """The bar heights of the page's Plotly chart titled `title` (Plotly ships arrays base64-encoded)."""
    import base64
    import json

    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if (spec["layout"].get("title") or {}).get("text") == title:
            y = spec["data"][0]["y"]
            return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]) if isinstance(y, dict) else np.array(y)
    raise AssertionError(f"no chart titled {title!r}")


def test_inspect_page_shows_the_occlusion_map_and_a_covered_faces_probabilities(env):
    from fercore import occlusion
    from fercore.data import load_dataset as load
    from test_app import on_data, open_app
    from ui import keys, nav

    at = open_app(nav.INSPECT, **on_data(env, **{keys.IMAGE: 4}))
    captions = [c for image in at.image for c in image.captions]
    assert {"Occlusion map", "Covered with the face's mean grey"} <= set(captions)
    assert at.slider(key=keys.OCCLUSION_PATCH).value == occlusion.DEFAULT_PATCH  # the library's defaults
    assert at.slider(key=keys.OCCLUSION_STRIDE).value == occlusion.DEFAULT_STRIDE

    loaded = load_model(env["checkpoint"])
    face = load(env["data"]).select_split("PrivateTest").pixels[4]
    for region in occlusion.REGIONS:
        at.radio(key=keys.COVER_REGION).set_value(region).run()
        assert not at.exception, region
        before, after = covered_prediction(loaded, face, region)
        np.testing.assert_allclose(bar_heights(at, "Before"), before, atol=1e-5)
        np.testing.assert_allclose(bar_heights(at, "After"), after, atol=1e-5)

    at.radio(key=keys.COVER_REGION).set_value("free").run()
    at.slider(key=keys.COVER_ROWS).set_value((20, 20)).run()  # an empty rectangle: a red box, the page stays up
    assert not at.exception
    assert any("not a non-empty rectangle" in e.value for e in at.error)
    at.slider(key=keys.OCCLUSION_PATCH).set_value(12).run()
    at.slider(key=keys.OCCLUSION_STRIDE).set_value(6).run()
    assert not at.exception and "12x12 px grey squares" in "\n".join(c.value for c in at.caption)


def test_signed_heatmap_is_white_at_zero_red_for_a_drop_blue_for_a_gain_on_one_symmetric_scale():
    from fercore.render import signed_heatmap

    picture = signed_heatmap(np.array([[0.0, 0.2, -0.1, -0.2]]))
    white, red, light_blue, blue = picture[0].astype(int)
    assert picture.shape == (1, 4, 3) and picture.dtype == np.uint8
    assert (white == 255).all() and red[0] > red[2] and blue[2] > blue[0]
    assert light_blue.sum() > blue.sum()  # half the drop, half as dark: the scale is the largest |value|
    assert (signed_heatmap(np.zeros((48, 48))) == 255).all()


def test_only_leading_same_size_convolutions_run_around_the_patch():
    from fercore.models import build_model
    from fercore.occlusion import _local_prefix

    assert _local_prefix(build_model("hw3")) == (5, 2)       # conv1 bn1 relu1 conv2 relu2, then a pooling
    assert _local_prefix(build_model("hw3_nobn")) == (4, 2)
    assert _local_prefix(build_model("fernet")) == (0, 0)    # a stride-2 first conv: the whole face each time
    assert _local_prefix(build_model("fernet_fullres")) == (3, 1)  # conv1 bn1 relu1, then a pooling


@pytest.mark.parametrize("name", ["hw3", "fernet", "fernet_fullres"])
def test_the_windowed_map_equals_the_loop_on_other_architectures(name):
    """hw3 (BatchNorm in its windowed block, patches at every edge) and fernet (no windowed block), random
    weights: the same map as one forward pass per patch."""
    from fercore.checkpoints import LoadedModel
    from fercore.models import build_model
    from fercore.transforms import Normalizer

    torch.manual_seed(0)
    model = build_model(name).eval()
    for module in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    loaded = LoadedModel(model=model, model_name=name, normalizer=Normalizer.from_dict({"mode": "scale255"}),
                         config={})
    face = np.random.default_rng(3).integers(0, 256, (48, 48)).astype(np.uint8)
    for patch, stride in [(8, 4), (5, 7)]:
        expected = one_patch_at_a_time(loaded, face, 2, patch, stride)
        windowed = occlusion_map(model, loaded.preprocess(face[None]), 2, patch=patch, stride=stride)
        np.testing.assert_allclose(windowed[0], expected, atol=2e-5)
