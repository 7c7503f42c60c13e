"""The Inspect page's occlusion part and the Labels page in Chromium on the shipped fernet checkpoint and data:
they draw with no error box, answer a click, and leave screenshots in tests/screenshots/."""

from __future__ import annotations

import time

from browser_kit import choose_checkpoint, wait_idle
from test_browser import browser, shot  # noqa: F401 -- fixture by name
from test_browser_pages import assert_no_error, open_page, page, server  # noqa: F401


def test_inspect_pages_occlusion_map_and_a_covered_mouth(server, page):  # noqa: F811
    open_page(page, server, "/inspect", "Inspect")
    choose_checkpoint(page, "fernet_wide")
    main = page.get_by_test_id("stMain")
    main.get_by_text("Occlusion map", exact=True).wait_for(timeout=300_000)
    heading = main.get_by_role("heading", name="Occlusion: cover part of the face, what changes?")
    heading.scroll_into_view_if_needed()
    started = time.perf_counter()
    main.get_by_test_id("stRadio").get_by_text("Mouth", exact=True).click()
    wait_idle(page, 120_000)
    print(f"cover the mouth -> probabilities: {time.perf_counter() - started:.2f} s")
    main.get_by_text("Covered with the face's mean grey").wait_for(timeout=60_000)  # may follow the idle status
    assert_no_error(page, "Inspect page's occlusion part on fernet")
    shot(page, "inspect_occlusion_fernet")


def test_labels_page_with_both_scores(server, page):  # noqa: F811
    open_page(page, server, "/labels", "Labels")
    choose_checkpoint(page, "fernet_wide")
    main = page.get_by_test_id("stMain")
    main.get_by_role("heading", name="The disputed faces").wait_for(timeout=300_000)
    wait_idle(page, 120_000)
    main.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)  # Plotly draws after the script run ends
    assert main.locator(".js-plotly-plot").count() == 2  # the label pairs and the FER2013 confusion matrix
    main.get_by_text("Score against the FER+ majority too").click()
    wait_idle(page, 120_000)
    main.get_by_text("Accuracy against the FER+ majority").wait_for(timeout=60_000)
    main.locator(".js-plotly-plot").nth(2).wait_for(timeout=60_000)
    assert main.locator(".js-plotly-plot").count() == 3
    assert main.get_by_text("likely mislabels").count() >= 1
    assert_no_error(page, "Labels page on fernet")
    shot(page, "labels_fernet")
