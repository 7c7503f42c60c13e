"""How a click computes on a 2-core laptop shared by a class: threads, locks, shared results, the server's log.

Who serialises what (one owner each):

- `fercore.analysis_mode._ANALYSIS_LOCK`, a process-wide reentrant lock held by `analysis_mode`: saliency, filters and
  occlusion flip a model's modes, requires_grad flags and weight layout and restore them, so no two analyses
  interleave (fercore's own guarantee, whoever calls it).
- `model_lock(loaded)`, here, one per loaded model: every session shares the cached model object, and an analysis
  hooks into its modules for a call, so the app holds this lock around each use of the shared model. Work that
  takes seconds (gradient ascent, the report) copies the model under it and runs on the copy, so clicks on the
  shared model do not wait for it.
- `SharedResults`' per-entry locks, here: a long result with a progress bar is computed by the first session to
  ask; the others wait on the entry and follow the same progress. Results without a bar use st.cache_resource /
  st.cache_data, which compute a key once per server likewise.

Threads: `use_app_threads` before heavy work (one thread while a training job trains, and for single-image
work). `computing` logs one line per heavy result to the server's terminal, so a teacher sees what a
class costs and the ten-session browser test can count that each is computed once. `start_warmup` imports what the
first heavy click would otherwise wait for.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import streamlit as st

from ui import settings

# ------------------------------------------------------------------------------------------------- threads

def training_anywhere() -> bool:
    from fercore.jobs import any_running

    return any_running(settings.runs_root()) or any_running(settings.checkpoints_root())


def use_app_threads(batch: bool = True) -> int:
    """Set torch's thread count for the work that follows and return it: call before heavy work.

    A training job holds one core (unless started on two threads, when it yields to the app, being niced): the app
    then uses one thread only, so a saliency click still answers in about a second while the class trains. batch:
    work on many images at once (evaluation, gradient ascent, a scan of the split), which two threads speed up when
    no job trains; False for single-image work (a saliency map, one face's layer outputs), too small to split: two
    threads that must meet at every layer lose far more than they gain as soon as anything else (the browser,
    another session) wants a core.
    """
    from fercore.threads import set_threads

    return set_threads(settings.APP_THREADS if batch and not training_anywhere()
                       else settings.APP_THREADS_DURING_TRAINING)


# --------------------------------------------------------------------------------------------------- locks

@st.cache_resource(show_spinner=False)
def _model_locks() -> dict:
    return {}


def model_lock(loaded) -> threading.Lock:
    """The lock of a loaded model (by its key), shared by every session of the server."""
    return _model_locks().setdefault(loaded.key, threading.Lock())


# --------------------------------------------------------------------------------------- shared results

@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    value: Any = None
    fraction: float = 0.0
    message: str = ""


class SharedResults:
    """Finished long results in one process-wide dict, with progress. st.cache_resource computes a value once for
    all sessions, but a cached function cannot drive a progress bar made outside it; this can."""

    def __init__(self, max_entries: int = 64):
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def _entry(self, key: Hashable) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            return entry

    def peek(self, key: Hashable) -> Any | None:
        """The finished value, or None (never computes)."""
        with self._lock:
            entry = self._entries.get(key)
        return entry.value if entry is not None and entry.done else None

    def get(self, key: Hashable, compute: Callable[[Callable[[float, str], None]], Any],
            on_progress: Callable[[float, str], None] | None = None) -> Any:
        """The value for `key`, computing it with compute(report) unless done (or being done by another session).

        report(fraction, message) updates the shared progress; on_progress (this session's bar) is called with it.
        """
        entry = self._entry(key)
        if entry.done:
            return entry.value
        notify = on_progress or (lambda fraction, message: None)
        while not entry.lock.acquire(timeout=0.25):  # another session computes: follow its progress
            notify(entry.fraction, entry.message)
        try:
            if entry.done:
                return entry.value

            def report(fraction: float, message: str = "") -> None:
                entry.fraction, entry.message = float(fraction), message
                notify(entry.fraction, message)

            entry.value = compute(report)
            entry.done = True
            return entry.value
        finally:
            entry.lock.release()


@st.cache_resource(show_spinner=False)
def shared_results() -> SharedResults:
    """The one SharedResults of this server process."""
    return SharedResults()


# ----------------------------------------------------------------------------------------------------- log

log = logging.getLogger("fercore.app.compute")
if not log.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(asctime)s fercore: %(message)s", "%H:%M:%S"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@contextmanager
def computing(what: str, model: str):
    """Log 'computed <what> for <model> in <seconds> s' when the block ends: which result, of which checkpoint."""
    started = time.perf_counter()
    yield
    log.info("computed %s for %s in %.2f s", what, model, time.perf_counter() - started)


# -------------------------------------------------------------------------------------------------- warmup

def _preload() -> None:
    from fercore.threads import preload_dynamo  # here, not at the call: importing torch is part of the head start

    preload_dynamo()


@st.cache_resource(show_spinner=False)
def start_warmup() -> threading.Thread:
    """fercore.threads.preload_dynamo in the background, once per server process, while the class looks at the
    first page: torch imports torch._dynamo (seconds on a busy 2-core laptop) on first use of some of its machinery
    (torch.optim's first step, for one)."""
    thread = threading.Thread(target=_preload, name="fercore-warmup", daemon=True)
    thread.start()
    return thread
