"""The Try it page through AppTest: a photo made from shipped FER2013 faces (tests/photos.py) uploaded or taken
with the webcam, on the App tests' trained checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from fercore import faces
from photos import blank_photo, encode, one_face_photo, two_face_photo
from test_app import classroom, env, on_data, open_app, texts  # noqa: F401 -- fixtures and helpers
from ui import keys, nav


def expected(env, photo, box, margin=faces.DEFAULT_MARGIN):
    """Brute force: the checkpoint's probabilities for the crop the page should show."""
    from fercore.checkpoints import load_model

    return load_model(env["checkpoint"]).predict(faces.crop_face(photo, box, margin=margin))[0]


def upload(at, photo, name="me.png", format="PNG"):
    at.file_uploader(key=keys.TRY_UPLOAD).set_value((name, encode(photo, format), f"image/{format.lower()}")).run()
    assert not at.exception, at.exception
    return at


def captions(at) -> list[str]:
    return [c for image in at.image for c in image.captions]


def shown_probabilities(at) -> np.ndarray:
    import base64
    import json

    y = json.loads(at.get("plotly_chart")[-1].proto.spec)["data"][0]["y"]  # plotly sends arrays as base64
    return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]) if isinstance(y, dict) else np.array(y)


def test_before_a_photo_the_page_says_what_it_does_and_asks_for_no_camera(env):
    at = open_app(nav.TRY_IT, **on_data(env))
    assert at.title[0].value == "Try it"
    assert "cropped to 48x48 grey" in texts(at)
    assert len(at.camera_input) == 0 and len(at.file_uploader(key=keys.TRY_UPLOAD).allowed_type) == 3


def test_an_uploaded_photo_shows_the_face_the_crop_and_the_inspect_pictures(env):
    photo, _ = one_face_photo()
    at = upload(open_app(nav.TRY_IT, **on_data(env)), photo)
    box = faces.find_faces(photo)[0]
    shown = captions(at)
    assert shown[0] == f"me.png: the face at {box.x}, {box.y}, {box.width} px"
    assert shown[1:] == ["What the model sees (48x48 grey)", "Original", "Heatmap", "Mask", "Overlay"]
    assert len(at.get("download_button")) == 1
    assert at.selectbox(key=keys.METHOD + keys.TRY_SUFFIX).value == "gradient"
    assert "true" not in at.selectbox(key=keys.TARGET_MODE + keys.TRY_SUFFIX).options  # a photo has no label


def test_the_bars_are_the_models_probabilities_for_the_crop_at_the_chosen_margin(env):
    photo, _ = one_face_photo()
    box = faces.find_faces(photo)[0]
    at = upload(open_app(nav.TRY_IT, **on_data(env)), photo)
    assert at.slider(key=keys.TRY_MARGIN).value == faces.DEFAULT_MARGIN
    np.testing.assert_allclose(shown_probabilities(at), expected(env, photo, box), atol=1e-5)
    at.slider(key=keys.TRY_MARGIN).set_value(0.3).run()
    np.testing.assert_allclose(shown_probabilities(at), expected(env, photo, box, 0.3), atol=1e-5)
    # the two crops give probabilities further apart than the tolerance, so the check tells them apart
    assert np.abs(expected(env, photo, box, 0.3) - expected(env, photo, box)).max() > 1e-4


@pytest.mark.parametrize("method", ["smoothgrad", "integrated_gradients", "gradcam"])
def test_every_method_and_a_contrast_target_render_on_a_photo(env, method):
    at = upload(open_app(nav.TRY_IT, **on_data(env)), one_face_photo()[0])
    at.selectbox(key=keys.METHOD + keys.TRY_SUFFIX).set_value(method).run()
    at.selectbox(key=keys.TARGET_MODE + keys.TRY_SUFFIX).set_value("contrast").run()
    assert not at.exception, at.exception
    assert captions(at)[2:] == ["Original", "Heatmap", "Mask", "Overlay"]


def test_a_webcam_picture_goes_the_same_way(env):
    photo, _ = one_face_photo()
    at = open_app(nav.TRY_IT, **on_data(env, **{keys.TRY_SOURCE: "camera"}))
    at.camera_input(key=keys.TRY_CAMERA).set_value(("shot.jpg", encode(photo, "JPEG"), "image/jpeg")).run()
    assert not at.exception, at.exception
    assert captions(at)[0].startswith("shot.jpg: the face at")


def test_two_faces_are_offered_largest_first_and_the_pick_changes_the_crop(env):
    photo, _ = two_face_photo()
    at = upload(open_app(nav.TRY_IT, **on_data(env)), photo)
    found = faces.find_faces(photo)
    picker = at.radio(key=keys.TRY_FACE)
    assert picker.value == 0 and len(picker.options) == 2
    assert captions(at)[0].endswith(f"{found[0].width} px")
    picker.set_value(1).run()
    assert not at.exception and captions(at)[0].endswith(f"{found[1].width} px")


def test_no_face_says_so_and_offers_the_centre(env):
    at = upload(open_app(nav.TRY_IT, **on_data(env)), blank_photo())
    assert "No face found" in texts(at)
    assert at.toggle(key=keys.TRY_CENTRE).value is True
    box = faces.centre_box(blank_photo())
    assert captions(at)[0] == f"me.png: the face at {box.x}, {box.y}, {box.width} px"
    at.toggle(key=keys.TRY_CENTRE).set_value(False).run()
    assert not at.exception and len(at.image) == 0


@pytest.mark.parametrize("data", [b"name,label\nalice,3\n", b""])
def test_a_file_that_is_not_an_image_gets_one_red_box_naming_it(env, data):
    at = open_app(nav.TRY_IT, **on_data(env))
    at.file_uploader(key=keys.TRY_UPLOAD).set_value(("holiday.png", data, "image/png")).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "holiday.png" in at.error[0].value
    assert len(at.image) == 0


def test_the_photo_is_kept_in_session_memory_only(env, tmp_path, monkeypatch):
    """Nothing under the working folder, the cache folder or the upload store changes; the session holds it."""
    import ui.sources

    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path / "cache"))
    saved = []
    monkeypatch.setattr(ui.sources, "save_upload", lambda data: saved.append(data))
    photo, _ = one_face_photo()
    at = upload(open_app(nav.TRY_IT, **on_data(env)), photo)
    assert saved == [] and not (tmp_path / "cache").exists()
    file_id, decoded, found = at.session_state[keys.TRY_PHOTO]
    assert (decoded[..., 0] == photo).all() and found == faces.find_faces(photo)
