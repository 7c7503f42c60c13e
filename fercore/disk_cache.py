"""A result on disk: numpy arrays kept under the cache folder, keyed by what they were computed from.

    meta = {"format": "fercore-evaluation/1", "model_key": loaded.key, "data": dataset.fingerprint(), ...}
    arrays, from_cache = get_or_compute(meta, lambda: {"probabilities": probs})

An entry is `<cache_dir>/<kind>/<hash of meta>.npz` (kind: the part of meta["format"] before its "/"), a
pickle-free .npz that holds the meta beside the arrays; a read checks the meta and the caller's `valid`, so a hash
collision, an older format or a damaged file is recomputed, never used. Files are renamed into place complete
(fercore.runs.atomic_write), so a reader never sees half of one.

Several processes may share one cache folder (app servers behind a proxy, a precompute beside them): a missing
entry is computed under an exclusive fcntl.flock on `<entry>.lock` beside it, and whoever waited on that lock reads
the finished entry instead of computing it again. Reads take no lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from fercore import runs

Arrays = dict  # name -> np.ndarray (scalars are stored as 0-d arrays)
_META = "meta"  # the array of an entry that holds its meta as JSON


def _canonical(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)


def entry_path(meta: dict, cache_dir=None) -> Path:
    """Where the entry for `meta` lives: <cache_dir>/<kind>/<hash>.npz; cache_dir None: fercore.runs.cache_dir()."""
    kind = str(meta["format"]).split("/")[0].removeprefix("fercore-")
    digest = hashlib.sha256(_canonical(meta).encode()).hexdigest()[:32]
    return Path(runs.cache_dir() if cache_dir is None else cache_dir) / kind / f"{digest}.npz"


def read(meta: dict, cache_dir=None, valid: Callable[[Arrays], bool] | None = None) -> Arrays | None:
    """The entry's arrays if its file is complete, made for exactly `meta` and `valid`; None for anything else."""
    path = entry_path(meta, cache_dir)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive[_META]) != _canonical(meta):
                return None
            arrays = {name: archive[name] for name in archive.files if name != _META}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return arrays if valid is None or valid(arrays) else None


def write(meta: dict, arrays: Arrays, cache_dir=None) -> Path:
    """Store `arrays` as the entry for `meta`, atomically (a reader sees the old entry or the whole new one)."""
    if _META in arrays:
        raise ValueError(f"an array may not be called {_META!r}: the entry keeps its meta there")
    path = entry_path(meta, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.atomic_write(path, lambda f: np.savez(f, **{_META: np.array(_canonical(meta))}, **arrays))
    return path


@contextmanager
def entry_lock(meta: dict, cache_dir=None):
    """Hold the entry's exclusive lock (an fcntl.flock on <entry>.lock, which the kernel drops if the holder
    dies): one process or thread at a time computes a given entry. The lock file stays: removing it would let a
    newcomer lock a fresh file while an older waiter holds the removed one."""
    path = entry_path(meta, cache_dir).with_suffix(".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a cache folder that cannot be written: nothing will be stored, so nothing to guard
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def get_or_compute(meta: dict, compute: Callable[[], Arrays], cache_dir=None,
                   valid: Callable[[Arrays], bool] | None = None) -> tuple[Arrays, bool]:
    """(arrays, from_cache): the entry for `meta`, else compute() stored as it, computed once however many
    processes ask at the same moment (the others wait on the entry's lock, then read it). A cache folder that
    cannot be written (read-only, full) costs the cache, not the result."""
    cached = read(meta, cache_dir, valid)
    if cached is not None:
        return cached, True
    with entry_lock(meta, cache_dir):
        cached = read(meta, cache_dir, valid)  # computed by whoever held the lock before us
        if cached is not None:
            return cached, True
        arrays = compute()
        try:
            write(meta, arrays, cache_dir)
        except OSError:
            pass
        return arrays, False


def is_cached(meta: dict, cache_dir=None) -> bool:
    """Whether an entry for `meta` is on disk (its file exists; read() still validates it)."""
    return entry_path(meta, cache_dir).is_file()
