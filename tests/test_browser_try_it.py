"""The Try it page in Chromium on the shipped fernet checkpoint: a photo (made from shipped FER2013 faces,
tests/photos.py) given to the uploader as a user would, the face found and cropped, the heatmap and mask drawn with
no error box; screenshots in tests/screenshots/."""

from __future__ import annotations

import time

from browser_kit import choose_checkpoint, wait_idle
from photos import blank_photo, encode, two_face_photo
from test_browser import browser, shot  # noqa: F401 -- fixture by name
from test_browser_pages import assert_no_error, open_page, page, server  # noqa: F401


def upload(page, name: str, data: bytes, mime: str) -> float:
    started = time.perf_counter()
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(
        {"name": name, "mimeType": mime, "buffer": data})
    wait_idle(page, 120_000)
    return time.perf_counter() - started


def test_a_photo_with_two_faces_shows_the_first_its_crop_and_the_saliency_pictures(server, page):  # noqa: F811
    open_page(page, server, "/try_it", "Try it")
    choose_checkpoint(page, "fernet_wide")
    main = page.get_by_test_id("stMain")
    seconds = upload(page, "two_people.jpg", encode(two_face_photo()[0], "JPEG"), "image/jpeg")
    main.get_by_text("What the model sees (48x48 grey)").wait_for(timeout=120_000)
    print(f"upload -> face, crop and saliency: {seconds:.2f} s")
    for caption in ("Original", "Heatmap", "Mask", "Overlay"):  # drawn after the crop, in the same run
        main.get_by_text(caption, exact=True).first.wait_for(timeout=60_000)
    main.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # the probability bars
    assert main.get_by_test_id("stRadio").get_by_text("2 (", exact=False).count() == 1  # the second face
    assert_no_error(page, "Try it page with a photo")
    shot(page, "try_it_fernet")
    main.get_by_test_id("stRadio").get_by_text("2 (", exact=False).click()
    wait_idle(page, 120_000)
    main.get_by_text("two_people.jpg: the face at", exact=False).wait_for(timeout=60_000)  # may follow the idle status
    assert_no_error(page, "Try it page, second face")


def test_a_photo_without_a_face_and_a_file_that_is_not_one(server, page):  # noqa: F811
    open_page(page, server, "/try_it", "Try it")
    main = page.get_by_test_id("stMain")
    upload(page, "wall.png", encode(blank_photo()), "image/png")
    main.get_by_text("No face found", exact=False).wait_for(timeout=60_000)
    main.get_by_text("What the model sees (48x48 grey)").wait_for(timeout=60_000)
    upload(page, "notes.png", b"this is a text file", "image/png")
    main.get_by_text("notes.png: not an image", exact=False).wait_for(timeout=60_000)
    wait_idle(page, 120_000)  # the error shows while the run is still going; the last photo's crop goes at its end
    assert main.get_by_text("What the model sees (48x48 grey)").count() == 0
