"""What the browser tests and benchmarks/bench_clicks.py share: a headless `streamlit run dashboard.py` on a free
port, Debian's Chromium through Playwright, and the dashboard's few page gestures."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FEAR, SAD = 2, 4
CELL_CLICK, IMAGE_CLICK = "cell click -> gallery", "image click -> saliency"
EPOCH_FIRST, EPOCH_AGAIN = "epoch switch, first visit", "epoch switch, revisited"
MATRIX_POINT = ".js-plotly-plot .scatterlayer path.point"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("streamlit did not come up")


@contextlib.contextmanager
def streamlit_server(env: dict[str, str], log_path: Path):
    """`streamlit run dashboard.py` headless on a free local port with `env` added; yields its URL."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless",
                                    "true", "--server.port", str(port), "--server.address", "127.0.0.1"],
                                   cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


# Why the DOM alone cannot say a gesture's run is over: a click returns before the server has begun the run it asks
# for, and a page checked then shows no running indicator and no faded element, only the state before the click.
# The browser itself knows: the app sends Streamlit's rerun request (BackMsg field 11, whose one-byte tag is 0x5A)
# from a timer a moment after the input event (WidgetStateManager.scheduleFlush), and the server ends every run with
# script_finished (ForwardMsg field 6, a varint status; 2 is "stopped early for a newer rerun", which is not the
# end). This script, run in each new document, makes `window.fercoreRuns.idle()` false from the first load until
# the first run has ended and been drawn, from a rerun request until a run that ends after it has, and for 100 ms
# after any input event (the request may still be on its timer); `requests` counts the rerun requests sent.
RUN_TRACKER = """(() => {
  const QUIET_MS = 100;
  let lastInput = -Infinity;
  const runs = window.fercoreRuns = {settled: false, requests: 0,
                                     idle: () => runs.settled && performance.now() - lastInput > QUIET_MS};
  for (const type of ["pointerup", "keyup", "input", "change"]) {
    window.addEventListener(type, () => { lastInput = performance.now(); }, true);
  }
  const RERUN_TAG = 0x5A, SCRIPT_FINISHED = 6, FINISHED_EARLY_FOR_RERUN = 2;
  const varint = (bytes, at) => {
    let value = 0, scale = 1, byte;
    do { byte = bytes[at++]; value += (byte & 127) * scale; scale *= 128; } while (byte & 128);
    return [value, at];
  };
  const finishedStatus = (bytes) => {  // script_finished's status, or -1: ForwardMsg's top level is varints and
    let at = 0, key, value;              // length-delimited fields only (hash, metadata, then the message)
    while (at < bytes.length) {
      [key, at] = varint(bytes, at);
      [value, at] = varint(bytes, at);
      if ((key & 7) === 0 && key >>> 3 === SCRIPT_FINISHED) return value;
      if ((key & 7) === 2) at += value; else if ((key & 7) !== 0) return -1;
    }
    return -1;
  };
  const Native = window.WebSocket;
  const send = Native.prototype.send;
  Native.prototype.send = function (data) {
    const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
                : data instanceof ArrayBuffer ? new Uint8Array(data) : null;
    if (bytes && bytes[0] === RERUN_TAG) { runs.requests += 1; runs.settled = false; }
    return send.call(this, data);
  };
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        if (!(event.data instanceof ArrayBuffer)) return;
        const status = finishedStatus(new Uint8Array(event.data));
        if (status < 0 || status === FINISHED_EARLY_FOR_RERUN) return;
        const answered = runs.requests;  // settled once the app has handled this message and painted a frame
        setTimeout(() => requestAnimationFrame(() => setTimeout(() => {
          if (runs.requests === answered) runs.settled = true;
        })));
      });
    }
  };
})();"""


def new_page(opener, **options):
    """A new tab from a browser or a browser context (`options` as Playwright's new_page), its script runs tracked
    (RUN_TRACKER) so that wait_idle waits for the run a gesture asked for."""
    page = opener.new_page(**options)
    page.add_init_script(RUN_TRACKER)
    return page


# The script run has ended: no running indicator, no element left faded from the previous run, and, in a tab that
# runs RUN_TRACKER, no rerun asked for and not yet finished.
IDLE = """() => !document.querySelector('[data-testid^="stStatusWidgetRunning"]')
                && !document.querySelector('[data-stale="true"]')
                && (!window.fercoreRuns || window.fercoreRuns.idle())"""


def wait_idle(page, timeout: float = 60_000) -> None:
    """Until the script run ends (IDLE)."""
    page.wait_for_function(IDLE, timeout=timeout)


def cell_centre(page, true: int, pred: int) -> tuple[float, float]:
    """Where the grid's marker for (true, pred) is on screen now: point true * 7 + pred of the scatter trace."""
    box = page.locator(".js-plotly-plot .scatterlayer .trace path.point").nth(true * 7 + pred).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def click_cell(page, true: int, pred: int) -> None:
    """Click the centre of the grid's marker for (true, pred), scrolled into view first."""
    page.locator(".js-plotly-plot .scatterlayer .trace path.point").nth(true * 7 + pred).scroll_into_view_if_needed()
    page.mouse.click(*cell_centre(page, true, pred))


def timed(gesture, done=lambda: None) -> float:
    started = time.perf_counter()
    gesture()
    done()
    return time.perf_counter() - started


def open_confusion(page, url: str) -> None:
    """Open the dashboard's first page, Confusion, and wait until its matrix is drawn and its run has ended."""
    page.goto(url)
    page.locator(MATRIX_POINT).first.wait_for(timeout=300_000)
    wait_idle(page, 300_000)


def time_clicks(page, url: str, repeats: int) -> dict[str, list[float]]:
    """Seconds of each warm click on the Confusion page, `repeats` of each: a cell (Fear/Sad and Sad/Fear in turn,
    so every click changes the cell) until its gallery is drawn, and a face's Inspect until its quick look shows
    the four pictures. A click counts until the script run it caused has ended in the page."""
    from fercore.labels import CLASS_NAMES

    open_confusion(page, url)
    times: dict[str, list[float]] = {CELL_CLICK: [], IMAGE_CLICK: []}
    for round_ in range(repeats + 1):  # round 0 warms the caches of every cell and face it touches
        for true, pred in ((FEAR, SAD), (SAD, FEAR)):
            heading = page.get_by_role("heading", name=f"True {CLASS_NAMES[true]}, predicted {CLASS_NAMES[pred]}")
            took = timed(lambda: click_cell(page, true, pred), lambda: (heading.wait_for(), wait_idle(page)))
            times[CELL_CLICK] += [took] if round_ else []
        buttons = page.get_by_role("button", name="Inspect")
        buttons.first.wait_for()  # the gallery's cards may still be drawing when the run's indicator is gone
        face = buttons.nth(round_ % min(buttons.count(), 8))
        pictures = page.get_by_role("dialog").locator("[data-testid='stImage'] img")
        took = timed(face.click, lambda: (pictures.nth(3).wait_for(), wait_idle(page)))
        times[IMAGE_CLICK] += [took] if round_ else []
        page.keyboard.press("Escape")  # close the dialog
        page.get_by_role("dialog").wait_for(state="detached")
        wait_idle(page)
    return times


def choose_checkpoint(page, name: str) -> None:
    """Pick a shipped checkpoint in the sidebar's first selectbox, as a user would."""
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name=f"{name} (shipped)").click()
    # The rerun starts a moment after the click: in a tab not from new_page, waiting for idle at once could end on
    # the previous checkpoint's page (CI once read fernet_fullres's summary as hw3's). The sidebar's progress line
    # names the checkpoint the server has drawn the page for, in any tab.
    page.get_by_test_id("stSidebar").get_by_text(progress_line(name)).wait_for(timeout=300_000)
    wait_idle(page, 300_000)


def progress_line(checkpoint: str) -> re.Pattern:
    """The sidebar's line for the checkpoint the page is drawn for."""
    return re.compile(rf"^{re.escape(checkpoint)}: \d+ of \d+ epochs trained")


def move_epoch_slider(page, key: str, lands_on: int | None) -> None:
    """Press `key` on the sidebar's Epoch slider, as a keyboard user would, and wait until the page shows the
    model after epoch `lands_on` (None: the checkpoint as saved) and its script run has ended."""
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_role("slider").focus()
    page.keyboard.press(key)
    caption = sidebar.get_by_text("Replaying epoch ")
    if lands_on is None:
        caption.wait_for(state="detached", timeout=300_000)
    else:
        sidebar.get_by_text(re.compile(rf"^Replaying epoch {lands_on}\b")).wait_for(timeout=300_000)
    wait_idle(page, 300_000)


def time_epoch_switches(page, url: str, checkpoint: str, epochs: list[int], repeats: int) -> dict[str, list[float]]:
    """Seconds of the Confusion page's switches between `checkpoint`'s snapshots (`epochs`, its run's): each
    snapshot's first visit, stepping through them with the arrow keys (its weights loaded, the split evaluated),
    then `repeats` revisits of the first snapshot and back to the checkpoint (both cached)."""
    open_confusion(page, url)
    choose_checkpoint(page, checkpoint)
    times: dict[str, list[float]] = {EPOCH_FIRST: [], EPOCH_AGAIN: []}
    times[EPOCH_FIRST].append(timed(lambda: move_epoch_slider(page, "Home", epochs[0])))
    for epoch in epochs[1:]:
        times[EPOCH_FIRST].append(timed(lambda: move_epoch_slider(page, "ArrowRight", epoch)))
    move_epoch_slider(page, "End", None)
    for _ in range(repeats):
        times[EPOCH_AGAIN].append(timed(lambda: move_epoch_slider(page, "Home", epochs[0])))
        times[EPOCH_AGAIN].append(timed(lambda: move_epoch_slider(page, "End", None)))
    return times
