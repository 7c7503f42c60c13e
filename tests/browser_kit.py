"""What the browser tests and benchmarks/bench_clicks.py share: a headless `streamlit run dashboard.py` on a free
port, Debian's Chromium through Playwright, and the dashboard's few page gestures."""

from __future__ import annotations

import contextlib
import os
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


def wait_idle(page, timeout: float = 60_000) -> None:
    """Until the script run ends: no running indicator, and no element left faded from the previous run."""
    page.wait_for_function("""() => !document.querySelector('[data-testid^="stStatusWidgetRunning"]')
                                   && !document.querySelector('[data-stale="true"]')""", timeout=timeout)


def click_cell(page, true: int, pred: int) -> None:
    """Click the centre of the grid's marker for (true, pred): point true * 7 + pred of the scatter trace."""
    point = page.locator(".js-plotly-plot .scatterlayer .trace path.point").nth(true * 7 + pred)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
