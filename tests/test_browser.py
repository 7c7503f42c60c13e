"""End to end in a real browser: `streamlit run dashboard.py` headless on a free port, driven by Debian's Chromium
through Playwright. Clicks the true-Fear / predicted-Sad cell, clicks one of its faces and checks its heatmap and mask
(in the quick look over the gallery, then on the Inspect page), renders a filter grid, starts and stops a training
run on the shipped data. Screenshots go to tests/screenshots/ (git-ignored); the timings are printed (pytest -s
shows them) and written to tests/screenshots/timings.txt."""

from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path

import pytest

from fercore.labels import CLASS_NAMES

from browser_kit import (CHROMIUM, CHROMIUM_ARGS, FEAR, MATRIX_POINT, ROOT, SAD, cell_centre, click_cell, new_page,
                         open_confusion, progress_line, streamlit_server, time_clicks, wait_idle)

SHIPPED_DATA = ROOT / "data" / "fer2013_test.npz"
SHOTS = ROOT / "tests" / "screenshots"


def missing(reason: str):
    """Skip on a user's machine; under CI a missing prerequisite is a failure, never a skip."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def shipped_checkpoints() -> list[Path]:
    from fercore.runs import list_runs

    folder = ROOT / "checkpoints"
    return list_runs(folder) + sorted(folder.glob("*.pt"))


@pytest.fixture(scope="module")
def checkpoints_root(tmp_path_factory) -> Path:
    """$FERCORE_CHECKPOINTS when set (as the app reads it), else the shipped checkpoints, else a small model trained
    here on the shipped PublicTest rows (which the demo trains on), good enough to take some Fear faces for Sad."""
    if os.environ.get("FERCORE_CHECKPOINTS"):
        return Path(os.environ["FERCORE_CHECKPOINTS"])
    if shipped_checkpoints():
        return ROOT / "checkpoints"
    if not SHIPPED_DATA.exists():
        missing(f"the shipped data {SHIPPED_DATA} is missing")
    import numpy as np
    import torch
    from fercore.data import load_dataset
    from fercore.labels import PRIVATE_TEST, PUBLIC_TEST
    from fercore.training import TrainConfig, train

    root = tmp_path_factory.mktemp("browser-checkpoints")
    torch.set_num_threads(2)
    data = load_dataset(None)
    public = np.flatnonzero(data.split == PUBLIC_TEST)[:1500]  # a part of the demo's training rows: quicker
    keep = np.concatenate([public, np.flatnonzero(data.split == PRIVATE_TEST)])
    train(TrainConfig(model="fernet", epochs=2, threads=2), root / "demo", dataset=data.subset(keep))
    return root


@pytest.fixture(scope="module")
def server(checkpoints_root, tmp_path_factory):
    if not SHIPPED_DATA.exists():
        missing(f"the shipped data {SHIPPED_DATA} is missing")
    runs = tmp_path_factory.mktemp("browser-runs")
    log = tmp_path_factory.mktemp("browser-log") / "streamlit.log"
    with streamlit_server({"FERCORE_CHECKPOINTS": str(checkpoints_root), "FERCORE_RUNS": str(runs)}, log) as url:
        yield {"url": url, "runs": runs, "log": log}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        missing("Chromium is not installed: `apt-get install chromium` (Debian), then run the tests again")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Timer:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, name: str, seconds: float) -> float:
        self.lines.append(f"{name:<40} {seconds:6.2f} s")
        print(f"[timing] {name}: {seconds:.2f} s")
        return seconds


def main_text(page) -> str:
    return page.get_by_test_id("stMain").inner_text()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # let the last elements and images settle
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_page(page, url: str, title: str, timer: Timer, label: str) -> None:
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name=title, level=1).wait_for(timeout=30_000)
    timer(f"first paint: {label}", time.perf_counter() - started)


def test_dashboard_in_a_real_browser(server, browser):
    for old in SHOTS.glob("*.png"):
        old.unlink()
    timer = Timer()
    url = server["url"]
    page = new_page(browser, viewport={"width": 1500, "height": 1000})
    try:
        # Warm the server's caches (model, data, evaluation) as the first visitor of a class would.
        started = time.perf_counter()
        page.goto(url)
        page.locator(MATRIX_POINT).first.wait_for(timeout=300_000)
        timer("cold start: confusion matrix drawn", time.perf_counter() - started)

        for path, title in (("", "Confusion"), ("/inspect", "Inspect"), ("/filters", "Filters"), ("/train", "Train")):
            open_page(page, url + path, title, timer, title)
            wait_idle(page)
            shot(page, f"first_{title.lower()}")

        # Confusion: click true Fear / predicted Sad, and the gallery shows that cell.
        open_page(page, url, "Confusion", timer, "Confusion (again)")
        page.locator(MATRIX_POINT).first.wait_for()
        wait_idle(page)
        started = time.perf_counter()
        click_cell(page, FEAR, SAD)
        heading = page.get_by_role("heading", name="True Fear, predicted Sad")
        heading.wait_for(timeout=30_000)
        count = int(heading.inner_text().split(":")[1].split()[0])
        assert count > 0, "no Fear face was taken for Sad"
        inspect_buttons = page.get_by_role("button", name="Inspect")
        inspect_buttons.nth(min(count, 24) - 1).wait_for(timeout=30_000)  # the page's last face is drawn
        timer("cell click -> gallery", time.perf_counter() - started)
        assert inspect_buttons.count() == min(count, 24)
        page.get_by_text("mean saliency").wait_for(timeout=60_000)
        wait_idle(page)
        shot(page, "confusion_fear_sad")

        # Click a face: its heatmap and mask appear at once (in a dialog over the gallery) ...
        started = time.perf_counter()
        inspect_buttons.first.click()
        dialog = page.get_by_role("dialog")
        for caption in ("Heatmap", "Mask"):
            dialog.get_by_text(caption, exact=True).wait_for(timeout=30_000)
        dialog.locator("[data-testid='stImage'] img").nth(3).wait_for(timeout=30_000)
        timer("image click -> saliency", time.perf_counter() - started)
        described = dialog.inner_text()
        assert "predicted Sad" in described and "true Fear" in described, described[:300]  # a face of that cell
        wait_idle(page)
        shot(page, "quick_look")

        # ... and the Inspect page shows the same face with every method.
        started = time.perf_counter()
        dialog.get_by_role("link", name="Open in the Inspect page").click()
        page.get_by_role("heading", name="Inspect", level=1).wait_for(timeout=30_000)
        for caption in ("Heatmap", "Mask"):  # the pictures' captions (the mask's radio is also called "Mask")
            page.get_by_text(caption, exact=True).last.wait_for(timeout=30_000)
        page.locator("[data-testid='stImage'] img").nth(3).wait_for(timeout=30_000)
        timer("dialog link -> Inspect page drawn", time.perf_counter() - started)
        described = main_text(page)
        assert "predicted Sad" in described and "true Fear" in described, described[:300]
        wait_idle(page)
        shot(page, "inspect")

        # Filters: render the first layer's grid.
        open_page(page, url + "/filters", "Filters", timer, "Filters (again)")
        render_button = page.get_by_role("button", name="Render all")
        grid_caption = page.get_by_text("filter 0 top left")
        render_button.or_(grid_caption).first.wait_for(timeout=120_000)
        wait_idle(page)
        started, timer_label = time.perf_counter(), "filter grid (already cached)"
        if render_button.is_visible():
            render_button.click()
            timer_label = "filter grid (first layer)"
        grid_caption.wait_for(timeout=240_000)
        timer(timer_label, time.perf_counter() - started)
        wait_idle(page)
        shot(page, "filters")

        # Train: start a 1-epoch run on the shipped data and see it running.
        open_page(page, url + "/train", "Train", timer, "Train (again)")
        page.get_by_label("Run name", exact=True).fill("browser-run")
        epochs = page.get_by_label("Epochs", exact=True)
        epochs.fill("1")
        epochs.press("Tab")
        page.get_by_role("button", name="Start training").click()
        page.get_by_role("button", name="Stop").wait_for(timeout=60_000)
        page.get_by_text("epoch 1/1").wait_for(timeout=120_000)
        shot(page, "train_running")

        # While it trains, the Confusion page still answers quickly (the app leaves the job its core).
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Confusion").click()
        page.locator(MATRIX_POINT).first.wait_for(timeout=60_000)
        wait_idle(page)
        started = time.perf_counter()
        click_cell(page, FEAR, SAD)
        inspect_buttons.nth(min(count, 24) - 1).wait_for(timeout=30_000)
        timer("cell click -> gallery, while training", time.perf_counter() - started)
        wait_idle(page)
        started = time.perf_counter()
        inspect_buttons.nth(1).click()
        page.get_by_role("dialog").locator("[data-testid='stImage'] img").nth(3).wait_for(timeout=30_000)
        timer("image click -> saliency, while training", time.perf_counter() - started)
        page.keyboard.press("Escape")

        # Back on the Train page the run is still there, live; stop it.
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Train").click()
        page.get_by_role("button", name="Stop").click(timeout=60_000)
        page.get_by_text("Not running").wait_for(timeout=60_000)
        wait_idle(page)
        shot(page, "train_stopped")
        assert (server["runs"] / "browser-run" / "train.log").exists()
    except Exception:
        shot(page, "failure")  # what the page showed when the test gave up
        raise
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "timings.txt").write_text("\n".join(timer.lines) + "\n")
        page.close()


def test_warm_click_latency(server, browser):
    """Three warm clicks of each kind (benchmarks/bench_clicks.py takes more): every one reaches its gallery or
    quick look; the median is printed and kept in timings.txt (timed, not asserted: the machine is shared)."""
    page = new_page(browser, viewport={"width": 1500, "height": 1000})
    try:
        times = time_clicks(page, server["url"], repeats=3)
    except Exception:
        shot(page, "click_failure")
        raise
    finally:
        page.close()
    lines = [f"{gesture} (warm, median of {len(seconds)})".ljust(40) + f" {statistics.median(seconds):6.2f} s"
             for gesture, seconds in times.items()]
    print("\n".join(f"[timing] {line}" for line in lines))
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open(SHOTS / "timings.txt", "a") as timings:
        timings.write("\n".join(lines) + "\n")
    assert [len(seconds) for seconds in times.values()] == [2 * 3, 3]  # two cells a round


def test_wait_idle_waits_for_the_run_a_click_asks_for(server, browser, checkpoints_root):
    """A click returns before the server has begun the run it asks for, and until then the page shows the state
    before the click: waiting for no running indicator alone once read the previous checkpoint's page. A tab from
    new_page sees the click's rerun request, and wait_idle waits for its run: right after, the sidebar names the
    checkpoint picked, with nothing else waited for."""
    from fercore.runs import list_runs

    names = [path.name for path in list_runs(checkpoints_root)]  # the server's checkpoints, "(shipped)" in its menu
    if len(names) < 2:
        missing(f"two checkpoints under {checkpoints_root} are needed to switch between them")
    page = new_page(browser, viewport={"width": 1500, "height": 1000})
    sidebar = page.get_by_test_id("stSidebar")
    try:
        open_confusion(page, server["url"])
        shown = next(name for name in names if sidebar.get_by_text(progress_line(name)).count())
        for name in [other for other in names if other != shown][:1] + [shown]:
            requests = page.evaluate("window.fercoreRuns.requests")
            sidebar.get_by_test_id("stSelectbox").first.click()
            page.get_by_role("option", name=f"{name} (shipped)").click()
            wait_idle(page, 300_000)
            assert page.evaluate("window.fercoreRuns.requests") > requests, "the click's rerun request went unseen"
            assert sidebar.get_by_text(progress_line(name)).count() == 1, f"wait_idle returned before {name} showed"
    finally:
        page.close()


def computed_results(log: Path) -> list[str]:
    """The server's 'computed <what> for <checkpoint>' lines (ui.compute.computing), without their times or whether
    the disk cache had the result: a line for each time the server's own cache missed."""
    lines = [line.split("fercore: ", 1)[1] for line in log.read_text(errors="replace").splitlines()
             if "fercore: computed " in line]
    return [re.sub(r" in [\d.]+ s$", "", line).replace(" (read from the disk cache)", "") for line in lines]


SESSIONS = 10
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def test_a_class_of_ten_sessions_sees_no_errors_and_shares_the_heavy_results(server, browser):
    """Ten browser sessions at once (a class opening the link), each clicking the Fear/Sad cell and rendering the
    first layer's filters: no session sees an error, and the server computes each heavy result once."""
    url = server["url"]
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in range(SESSIONS)]
    pages = [new_page(context) for context in contexts]
    started = time.perf_counter()
    try:
        for page in pages:
            page.goto(url, wait_until="commit")  # all ten at once, without waiting for each to draw
        for page in pages:
            page.locator(MATRIX_POINT).first.wait_for(timeout=300_000)
            wait_idle(page, 120_000)
        for page in pages:
            click_cell(page, FEAR, SAD)
        for page in pages:
            page.get_by_role("heading", name="True Fear, predicted Sad").wait_for(timeout=120_000)
            page.get_by_text("mean saliency").wait_for(timeout=120_000)
            wait_idle(page, 120_000)
        for page in pages:
            page.goto(url + "/filters", wait_until="commit")
        for page in pages:
            render_button = page.get_by_role("button", name="Render all")
            render_button.or_(page.get_by_text("filter 0 top left")).first.wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            if render_button.is_visible():
                render_button.click()
        for index, page in enumerate(pages):
            page.get_by_text("filter 0 top left").wait_for(timeout=300_000)
            wait_idle(page, 120_000)
            assert page.locator(ERRORS).count() == 0, f"session {index}: {page.locator(ERRORS).first.inner_text()}"
            assert page.get_by_text("Connection error").count() == 0, f"session {index} lost its connection"
        print(f"[timing] {SESSIONS} sessions: matrix, cell, filters: {time.perf_counter() - started:.1f} s")
        shot(pages[-1], "class_session_10")
    except Exception:
        shot(pages[-1], "class_failure")
        raise
    finally:
        for context in contexts:
            context.close()
    # Each result of each checkpoint at most once for the whole server: an earlier test on it, or its disk cache,
    # may have it already.
    computed = computed_results(server["log"])
    for what in ("evaluation on PrivateTest (tta False)", f"mean face and saliency of cell ({FEAR}, {SAD})",
                 "filters of conv1 (all"):
        lines = [line for line in computed if line.startswith(f"computed {what}")]
        assert len(lines) == len(set(lines)), (what, computed)


SLOW_IMPORT = '''
"""Loaded at interpreter start (sitecustomize): pandas' import takes {delay} s, as on a cold disk, so a second
session's script runs while the first one is still importing it."""
import importlib.abc
import importlib.machinery
import sys
import time


class SlowPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "pandas":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        execute = spec.loader.exec_module

        def slow_exec_module(module):  # the module is in sys.modules, half built, while this sleeps
            time.sleep({delay})
            execute(module)

        spec.loader.exec_module = slow_exec_module
        return spec


sys.meta_path.insert(0, SlowPandas())
'''


def test_first_visits_to_a_cold_server_never_see_a_half_imported_module(checkpoints_root, browser, tmp_path):
    """A class opens the link on a server that has just started: the first session's script is still importing
    pandas (slowly, as from a cold disk) when the second's draws its matrix. plotly looks pandas up in sys.modules
    without importing it, so without the app's early import the second session saw "partially initialized module
    'pandas' has no attribute 'Series'" in place of the matrix."""
    if not SHIPPED_DATA.exists():
        missing(f"the shipped data {SHIPPED_DATA} is missing")
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "sitecustomize.py").write_text(SLOW_IMPORT.format(delay=8.0))
    python_path = os.pathsep.join(filter(None, [str(tmp_path / "slow"), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": python_path, "FERCORE_CHECKPOINTS": str(checkpoints_root), "FERCORE_RUNS": str(tmp_path)}
    with streamlit_server(env, tmp_path / "streamlit.log") as url:
        contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in range(2)]
        first, second = (new_page(context) for context in contexts)
        try:
            first.goto(url, wait_until="commit")
            first.locator(MATRIX_POINT).first.wait_for(timeout=300_000)  # its script goes on to the table: pandas
            second.goto(url, wait_until="commit")
            for index, page in enumerate((first, second)):
                page.locator(MATRIX_POINT).first.or_(page.locator(ERRORS).first).wait_for(timeout=120_000)
                wait_idle(page, 120_000)
                errors = page.locator(ERRORS)
                assert errors.count() == 0, f"session {index}: {errors.first.inner_text()}"
                assert page.get_by_text("Per class", exact=True).count() == 1
        finally:
            for context in contexts:
                context.close()
    assert "partially initialized" not in (tmp_path / "streamlit.log").read_text(errors="replace")


# What Plotly saw of each click (kept apart from the double-click check's own listeners below).
TRACE_CLICKS = """() => { const chart = document.querySelector('.js-plotly-plot'); window.clickTrace = [];
    chart.on('plotly_click', (e) => window.clickTrace.push('click ' + e.points[0].pointIndex));
    chart.on('plotly_selected', (e) => window.clickTrace.push('selected ' + (e ? e.points.map(p => p.pointIndex) : '-')));
    chart.on('plotly_deselect', () => window.clickTrace.push('deselect')); }"""


def test_a_second_click_right_after_the_first_is_never_lost(server, browser):
    """A student clicks the next cell as soon as the last one's faces show, which on a warm server is well inside
    Plotly's 300 ms double-click delay: Plotly took that click for a double click and cleared the selection, so the
    last cell stayed shown. Each click waits until the last one's result is drawn (its heading, and the run over),
    as the issue's loop did. On a loaded 2-core machine a synthetic click, once in many CI runs, drew nothing (a click
    a student would simply repeat): a click that shows nothing within 20 s is clicked again, once, and what Plotly saw
    of it is printed; more than one such click in the eight, or a second miss of the same cell, fails."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = new_page(browser, viewport={"width": 1500, "height": 1000})
    try:
        page.goto(server["url"])
        page.locator(MATRIX_POINT).first.wait_for(timeout=300_000)
        wait_idle(page, 300_000)
        page.locator(MATRIX_POINT).first.scroll_into_view_if_needed()
        page.evaluate(TRACE_CLICKS)
        gaps, last, repeated = [], None, []
        for true, pred in [(FEAR, SAD), (SAD, FEAR)] * 4:  # the first two warm the cells, the rest come fast
            heading = page.get_by_role("heading", name=f"True {CLASS_NAMES[true]}, predicted {CLASS_NAMES[pred]}")
            for attempt in range(2):
                page.evaluate("window.clickTrace.length = 0")
                page.mouse.click(*cell_centre(page, true, pred))
                now = time.monotonic()
                if last is not None and not attempt:
                    gaps.append(now - last)
                last = now
                try:
                    heading.wait_for(timeout=20_000 if not attempt else 60_000)
                    break
                except PlaywrightTimeout:  # only a wait that ran out is a missed click; any other error fails
                    seen = page.evaluate("window.clickTrace")
                    repeated.append(f"cell {true * 7 + pred}, attempt {attempt + 1}: Plotly saw {seen}")
                    if attempt:
                        shot(page, "lost_click")
                        raise AssertionError(f"the cell's gallery never showed: {repeated}") from None
            wait_idle(page, 60_000)
        print("clicked again:", repeated or "none")
        assert len(repeated) <= 1, f"more than one click drew nothing: {repeated}"
        assert heading.count() == 1
        print("seconds between clicks:", " ".join(f"{gap:.2f}" for gap in gaps))
        # Two clicks 0.1 s apart, well inside Plotly's default delay: each is a click, and none a double click.
        page.evaluate("""() => { const chart = document.querySelector('.js-plotly-plot');
            window.plotlyEvents = [];
            chart.on('plotly_click', () => window.plotlyEvents.push('click'));
            chart.on('plotly_doubleclick', () => window.plotlyEvents.push('doubleclick')); }""")
        page.mouse.click(*cell_centre(page, FEAR, SAD))
        page.wait_for_timeout(100)
        page.mouse.click(*cell_centre(page, SAD, FEAR))
        page.wait_for_timeout(500)
        assert page.evaluate("window.plotlyEvents") == ["click", "click"]
    finally:
        page.close()
