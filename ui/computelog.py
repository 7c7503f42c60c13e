"""One line in the server's terminal for each heavy result the app computes (an evaluation, a filter grid, a cell's
mean saliency, top activating images): a teacher sees what a class costs, and the ten-session browser test counts
that each is computed once per server, not once per session."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

log = logging.getLogger("fercore.app.compute")
if not log.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(asctime)s fercore: %(message)s", "%H:%M:%S"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@contextmanager
def computing(what: str):
    started = time.perf_counter()
    yield
    log.info("computed %s in %.2f s", what, time.perf_counter() - started)
