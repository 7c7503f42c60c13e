"""A lecture hall on one server: 30 browser sessions open the Confusion page and click a cell, all within a minute,
first with a precomputed lesson (fercore.lesson), then on an empty cache.

    flock /tmp/fercore-bench.lock .venv/bin/python -m benchmarks.bench_lecture [--sessions 30] [--within 60]

Run it as a module from the repository root (it uses the browser tests' harness, tests/browser_kit.py). Each round
starts a fresh `streamlit run dashboard.py` on a free loopback port with its own cache folder ($FERCORE_CACHE_DIR)
and drives Debian's Chromium through Playwright: one browser, one context (a session of its own) per student,
started evenly over --within seconds. A student opens the page, waits for the matrix, and clicks one off-diagonal
cell (students take the 42 in turn); the click is timed until the cell's heading is drawn and the script run it
caused has ended. Every step is bounded (--timeout); a student who hits an error or a timeout counts as an error.

The precomputed round fills its cache first with `fercore.lesson.precompute` on the shipped checkpoint the app
opens with (its Confusion-page parts on PrivateTest: evaluations, every cell's means, every face's first view),
timed apart. Prints, per round: students, errors, median and worst page-open and click times.
"""

from __future__ import annotations

import argparse
import os
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fercore.labels import CLASS_NAMES
from tests.browser_kit import CHROMIUM, CHROMIUM_ARGS, IDLE, MATRIX_POINT, RUN_TRACKER, streamlit_server

ROOT = Path(__file__).resolve().parent.parent
OFF_DIAGONAL = [(t, p) for t in range(len(CLASS_NAMES)) for p in range(len(CLASS_NAMES)) if t != p]


async def student(browser, url: str, number: int, start_at: float, timeout_ms: float) -> dict:
    """One session: open the Confusion page, click a cell; the seconds each took, or the error."""
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    await page.add_init_script(RUN_TRACKER)
    true, pred = OFF_DIAGONAL[number % len(OFF_DIAGONAL)]
    try:
        opened = time.perf_counter()
        await page.goto(url, timeout=timeout_ms)
        await page.locator(MATRIX_POINT).first.wait_for(timeout=timeout_ms)
        await page.wait_for_function(IDLE, timeout=timeout_ms)
        open_seconds = time.perf_counter() - opened
        point = page.locator(".js-plotly-plot .scatterlayer .trace path.point").nth(true * 7 + pred)
        await point.scroll_into_view_if_needed(timeout=timeout_ms)
        box = await point.bounding_box()
        heading = page.get_by_role("heading", name=f"True {CLASS_NAMES[true]}, predicted {CLASS_NAMES[pred]}")
        clicked = time.perf_counter()
        await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await heading.wait_for(timeout=timeout_ms)
        await page.wait_for_function(IDLE, timeout=timeout_ms)
        return {"open": open_seconds, "click": time.perf_counter() - clicked}
    except Exception as e:  # a timeout or a broken page: this student's error, the others go on
        return {"error": f"student {number}, cell ({true}, {pred}): {type(e).__name__}: {str(e).splitlines()[0]}"}
    finally:
        await context.close()


async def lecture(url: str, sessions: int, within: float, timeout_ms: float) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        begin = time.perf_counter()
        results = await asyncio.gather(*(student(browser, url, i, begin + i * within / sessions, timeout_ms)
                                         for i in range(sessions)))
        await browser.close()
    return list(results)


def summary(name: str, results: list[dict]) -> str:
    errors = [r["error"] for r in results if "error" in r]
    done = [r for r in results if "error" not in r]
    line = f"{name:<14} {len(results):>8} {len(errors):>7}"
    for what in ("open", "click"):
        seconds = [r[what] for r in done]
        line += f" {statistics.median(seconds):8.2f}s {max(seconds):8.2f}s" if seconds else f" {'-':>9} {'-':>9}"
    return line + "".join(f"\n    {e}" for e in errors)


def run_round(name: str, checkpoints: str, cache: Path, args) -> str:
    with tempfile.TemporaryDirectory() as scratch, \
            streamlit_server({"FERCORE_CHECKPOINTS": checkpoints, "FERCORE_RUNS": scratch,
                              "FERCORE_CACHE_DIR": str(cache)}, Path(scratch) / "streamlit.log") as url:
        results = asyncio.run(lecture(url, args.sessions, args.within, args.timeout * 1000))
        log = (Path(scratch) / "streamlit.log").read_text(errors="replace")
    heavy = sum(1 for line in log.splitlines() if "fercore: computed" in line and "disk cache" not in line)
    return summary(name, results) + f"\n    server: {heavy} heavy results computed during the round"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--within", type=float, default=60.0, help="seconds over which the sessions start")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each step of a session may take")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--lesson-cache", help="the precomputed round's cache folder, kept (default: a temporary "
                                                "one); a lesson already there is not computed again")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit("Chromium is not installed: `apt-get install chromium` (Debian)")
    from fercore import lesson
    from ui.sources import checkpoint_options  # the checkpoint the app opens with, as its sidebar picks it

    os.environ["FERCORE_CHECKPOINTS"] = args.checkpoints
    first = checkpoint_options()[0]
    rows = []
    with tempfile.TemporaryDirectory() as caches:
        precomputed, empty = Path(args.lesson_cache or Path(caches) / "lesson"), Path(caches) / "empty"
        os.environ["FERCORE_CACHE_DIR"] = str(precomputed)
        done = lesson.precompute([first], splits=("PrivateTest",), pages=("confusion",))
        print(f"precomputed the Confusion page's lesson for {first}: {done.describe()}", flush=True)
        rows.append(run_round("precomputed", args.checkpoints, precomputed, args))
        rows.append(run_round("empty cache", args.checkpoints, empty, args))
    print(f"{'round':<14} {'students':>8} {'errors':>7} {'open med':>9} {'worst':>9} {'click med':>9} {'worst':>9}"
          f"   ({args.sessions} sessions started within {args.within:.0f} s)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
