"""The Model and Compare pages in Chromium on the shipped checkpoints and data, at their defaults, and the Epoch
slider's replay on the Confusion, Filters and Inspect pages: each page draws its tables and figures with no error
box, and leaves a screenshot per shipped checkpoint in tests/screenshots/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser_kit import ROOT, choose_checkpoint, move_epoch_slider, new_page, streamlit_server, timed, wait_idle
from test_browser import SHIPPED_DATA, browser, missing, shot, shipped_checkpoints  # noqa: F401 -- fixture by name

ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
PARAMETERS = {"hw3": "2,619,975 parameters", "fernet_wide": "4,689,735 parameters"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not SHIPPED_DATA.exists():
        missing(f"the shipped data {SHIPPED_DATA} is missing")
    if len(shipped_checkpoints()) < 2:
        missing("the shipped checkpoints (checkpoints/hw3 and checkpoints/fernet_wide) are missing")
    runs = tmp_path_factory.mktemp("pages-runs")
    log = tmp_path_factory.mktemp("pages-log") / "streamlit.log"
    with streamlit_server({"FERCORE_CHECKPOINTS": str(ROOT / "checkpoints"), "FERCORE_RUNS": str(runs)}, log) as url:
        yield url


@pytest.fixture
def page(browser):  # noqa: F811
    # Tall enough for a whole page in one screenshot (Streamlit scrolls inside its main block, not the window).
    page = new_page(browser, viewport={"width": 1500, "height": 2300})
    page.set_default_timeout(120_000)  # screenshots wait for fonts, slow on a busy 2-core machine
    yield page
    page.close()


def open_page(page, url: str, path: str, title: str) -> None:
    page.goto(url + path)
    page.get_by_role("heading", name=title, level=1).wait_for(timeout=60_000)
    wait_idle(page, 300_000)


def wait_for_tables(main, count: int) -> None:
    """Until `count` tables are drawn (st.dataframe loads its grid lazily, showing a skeleton meanwhile)."""
    tables = main.get_by_test_id("stDataFrame")
    for k in range(count):
        tables.nth(k).scroll_into_view_if_needed(timeout=120_000)
    assert tables.count() == count
    main.page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=120_000)


def settled_sources(page, images) -> list[str]:
    """The addresses of `images` once the page's run has ended and no more of them appear."""
    images.first.wait_for(timeout=300_000)
    count = -1
    while images.count() != count:
        count = images.count()
        page.wait_for_timeout(1500)
        wait_idle(page, 300_000)
    return [images.nth(k).get_attribute("src") for k in range(count)]


def assert_no_error(page, where: str) -> None:
    errors = page.locator(ERRORS)
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()}"


def test_the_menu_lists_model_and_compare_after_filters(server, page):
    open_page(page, server, "", "Confusion")
    links = page.get_by_test_id("stSidebarNav").get_by_role("link")
    assert [text.split("\n")[-1].strip() for text in links.all_inner_texts()] == [  # after the icon
        "Confusion", "Inspect", "Filters", "Model", "Compare", "Labels", "Try it", "Train"]


@pytest.mark.parametrize("name", ["fernet_wide", "hw3"])
def test_model_page_on_each_shipped_checkpoint(server, page, name):
    open_page(page, server, "/model", "Model")
    choose_checkpoint(page, name)
    main = page.get_by_test_id("stMain")
    main.get_by_text(PARAMETERS[name]).wait_for(timeout=60_000)
    main.get_by_text("has no Training split").wait_for(timeout=300_000)  # the accuracy table is drawn by then
    wait_idle(page, 300_000)
    wait_for_tables(main, 2)  # layers, accuracy per split (the recipe is a plain table)
    main.get_by_test_id("stTable").get_by_text("learning rate").wait_for(timeout=120_000)
    main.locator(".js-plotly-plot").first.wait_for(timeout=120_000)  # Plotly draws after the script run ends
    assert main.locator(".js-plotly-plot").count() == 1  # learning curves
    main.get_by_role("button", name="Layers (CSV)").wait_for(timeout=60_000)  # the Downloads row is drawn last
    assert_no_error(page, f"Model page on {name}")
    shot(page, f"model_{name}")


@pytest.mark.parametrize("name", ["fernet_wide", "hw3"])
def test_compare_page_at_its_defaults(server, page, name):
    open_page(page, server, "/compare", "Compare")
    choose_checkpoint(page, name)
    main = page.get_by_test_id("stMain")
    main.get_by_text("Settings that differ").wait_for(timeout=300_000)
    main.get_by_role("heading", name="Recall per class").wait_for(timeout=60_000)
    wait_idle(page, 300_000)
    main.get_by_test_id("stTable").get_by_text("best validation accuracy").wait_for(timeout=120_000)
    plots = main.locator(".js-plotly-plot")
    plots.nth(1).wait_for(timeout=120_000)  # Plotly draws each chart after the run ends, one by one
    assert plots.count() == 2  # the confusion difference and the recall bars
    assert main.locator(".js-plotly-plot .heatmaplayer").count() == 1
    assert_no_error(page, f"Compare page with {name} in the sidebar")
    shot(page, f"compare_{name}")


def test_the_model_pages_report_downloads_the_five_answers(server, page):
    """The Model page's report button, clicked as a user would: the browser saves one self-contained HTML page
    with the five questions in order, built for the sidebar's checkpoint."""
    from fercore.report import SECTIONS

    open_page(page, server, "/model", "Model")
    choose_checkpoint(page, "fernet_wide")
    button = page.get_by_role("button", name="Report: the five questions (HTML)")
    button.wait_for(timeout=300_000)
    with page.expect_download(timeout=600_000) as download:
        button.click()
    html = open(download.value.path(), encoding="utf-8").read()
    assert download.value.suggested_filename.startswith("report_fernet_wide")
    positions = [html.index(f'id="{section}"') for section in SECTIONS]
    assert positions == sorted(positions) and len(SECTIONS) == 5
    assert "fernet_wide" in html and "http://" not in html and "https://" not in html
    assert_no_error(page, "Model page after the report")


@pytest.mark.parametrize("name", ["fernet_wide", "hw3"])
def test_the_epoch_slider_replays_each_shipped_checkpoints_training(server, page, name):
    """Each shipped checkpoint kept snapshots: its Epoch slider, moved to epoch 1 with the keyboard as a user
    would, shows the matrix of the model after one epoch (a lower accuracy), and back at "as saved" the checkpoint's."""
    open_page(page, server, "", "Confusion")
    choose_checkpoint(page, name)
    main = page.get_by_test_id("stMain")
    main.get_by_text("Per class", exact=True).wait_for(timeout=300_000)
    saved = main.get_by_text("accuracy").first.inner_text()
    slider = page.get_by_test_id("stSidebar").get_by_role("slider")
    assert slider.get_attribute("aria-valuetext") == "as saved"
    print(f"switch to epoch 1, cold: {timed(lambda: move_epoch_slider(page, 'Home', 1)):.1f} s")
    early = main.get_by_text("accuracy").first.inner_text()
    assert early != saved and slider.get_attribute("aria-valuetext") == "1"
    assert_no_error(page, f"Confusion page of {name} at epoch 1")
    shot(page, f"confusion_{name}_epoch1")
    move_epoch_slider(page, "End", None)
    assert slider.get_attribute("aria-valuetext") == "as saved"
    main.get_by_text(saved).wait_for(timeout=300_000)


@pytest.mark.parametrize("path, title", [("/filters", "Filters"), ("/inspect", "Inspect")])
def test_the_epoch_slider_replays_filters_and_saliency(server, page, path, title):
    """Where a class watches the model learn: on hw3 at epoch 1, the Filters page's conv1 images and the Inspect
    page's heatmap and mask are other pictures than the saved checkpoint's (the face itself stays)."""
    open_page(page, server, path, title)
    choose_checkpoint(page, "hw3")
    images = page.get_by_test_id("stMain").get_by_test_id("stImage").locator("img")
    saved = settled_sources(page, images)
    move_epoch_slider(page, "Home", 1)
    early = settled_sources(page, images)
    assert len(early) == len(saved) and early != saved
    if title == "Filters":  # and the gradient-ascent images of that epoch's conv1, rendered as a user asks
        cache = Path(os.environ["FERCORE_CACHE_DIR"])
        before = set(cache.rglob("*"))
        page.get_by_role("button", name="Render all 64 filters of conv1").click()
        images.nth(len(early)).wait_for(timeout=300_000)
        wait_idle(page, 300_000)
        # Into this test session's cache: a user's (or an earlier session's) cache must never decide what a page
        # shows here (it once did: a render left from an earlier run added an image to the epoch-1 page).
        assert set(cache.rglob("*")) - before, f"the server stored the rendered filters somewhere other than {cache}"
    assert_no_error(page, f"{title} page of hw3 at epoch 1")
    shot(page, f"{title.lower()}_hw3_epoch1")
