"""Long computations shared by every session of the server, with progress.

st.cache_resource computes a value once for all sessions, but a cached function cannot drive a progress bar made
outside it. SharedResults keeps finished values in one process-wide dict; the first session to ask computes
(reporting progress through a callback), and any session asking for the same key meanwhile waits and follows the
same progress, so a class of ten sees one computation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import streamlit as st


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    value: Any = None
    fraction: float = 0.0
    message: str = ""


class SharedResults:
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
