"""Click latency in a real browser: the Confusion page's cell click -> its gallery, and a face's Inspect click -> its
heatmap and mask, each repeated, with warm caches (the issue's target: 1 s each on 2 cores); then the Epoch slider's
switches between a shipped checkpoint's training snapshots, first visits (cold) and revisits (cached).

    .venv/bin/python -m benchmarks.bench_clicks [--repeats 8] [--checkpoints checkpoints] [--replay hw3] [--while-training]

Run it as a module from the repository root: it imports the app's `ui` package and the browser tests' harness
(tests/browser_kit.py), which live there, not in the installed fercore.

Starts `streamlit run dashboard.py` headless on a free port and drives Debian's Chromium (/usr/bin/chromium) with
Playwright, as tests/test_browser.py does. A click is timed from the mouse event to the moment the script run it
caused has ended in the page (no running indicator, nothing left faded) with the awaited elements present: what a
student waits for. Prints one row per gesture: median, best and worst. --while-training first starts a training run
on the shipped data exactly as the Train page does (fercore.jobs: 1 torch thread, niced), and stops it at the end.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from fercore import jobs, runs
from fercore.config import TrainConfig
from tests.browser_kit import CHROMIUM, CHROMIUM_ARGS, new_page, streamlit_server, time_clicks, time_epoch_switches
from ui.settings import JOB_THREADS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--replay", default="fernet_wide", help="the shipped checkpoint whose snapshots to switch between")
    parser.add_argument("--while-training", action="store_true", help="with a Train-page run going on beside")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit("Chromium is not installed: `apt-get install chromium` (Debian)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch, \
            streamlit_server({"FERCORE_CHECKPOINTS": args.checkpoints, "FERCORE_RUNS": scratch},
                             Path(scratch) / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = new_page(browser, viewport={"width": 1500, "height": 1000})
        run_dir = Path(scratch) / "bench-run"
        try:
            if args.while_training:
                run_dir.mkdir()
                jobs.start_training(run_dir, TrainConfig(epochs=50), threads=JOB_THREADS)
            times = time_clicks(page, url, args.repeats)
            epochs = runs.snapshot_epochs(str(Path(args.checkpoints) / args.replay))
            times |= time_epoch_switches(page, url, args.replay, epochs, args.repeats)
        except Exception:
            page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench_clicks_failure.png"), full_page=True)
            raise
        finally:
            if args.while_training:
                jobs.stop(run_dir)
        browser.close()
    beside = ", a Train-page run training beside" if args.while_training else ""
    print(f"{'gesture':<28} {'median':>8} {'best':>8} {'worst':>8}   ({args.repeats} rounds{beside})")
    for gesture, seconds in times.items():
        print(f"{gesture:<28} {statistics.median(seconds):7.2f}s {min(seconds):7.2f}s {max(seconds):7.2f}s"
              f"   ({len(seconds)} clicks)")


if __name__ == "__main__":
    main()
