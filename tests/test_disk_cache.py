"""fercore.disk_cache: a result stored once and read back, shared safely by several processes (app servers on one
cache folder): two asking at once compute it once, and a reader never sees a file half written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fercore import disk_cache

META = {"format": "fercore-test/1", "model_key": "abc", "data": "f00d"}

# A process that asks for META's entry: its compute() takes a while and leaves one line in a log per call.
ASKER = """
import sys, time, numpy as np
from fercore import disk_cache
cache, log, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, go - time.time()))  # both processes ask at the same moment
def compute():
    with open(log, "a") as f:
        f.write("computed\\n")
    time.sleep(1.0)
    return {"values": np.arange(1000, dtype=np.float32)}
arrays, from_cache = disk_cache.get_or_compute(%r, compute, cache)
print(from_cache, float(arrays["values"].sum()))
"""

# A process that replaces META's entry again and again, each time with one value everywhere (a ~4 MB array).
WRITER = """
import sys, numpy as np
from fercore import disk_cache
cache, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    disk_cache.write(%r, {"values": np.full(1_000_000, i, dtype=np.float32)}, cache)
"""


def python(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_result_is_computed_once_then_read(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"values": np.arange(5.0), "seconds": np.float64(0.5)}

    arrays, from_cache = disk_cache.get_or_compute(META, compute, tmp_path)
    again, again_from_cache = disk_cache.get_or_compute(META, compute, tmp_path)
    assert (from_cache, again_from_cache, len(calls)) == (False, True, 1)
    np.testing.assert_array_equal(again["values"], np.arange(5.0))
    assert float(again["seconds"]) == 0.5
    path = disk_cache.entry_path(META, tmp_path)
    assert path.parent == tmp_path / "test" and path.suffix == ".npz" and disk_cache.is_cached(META, tmp_path)
    assert path.with_suffix(".lock").is_file()  # the lock lives beside the entry

    # Another meta is another entry; a result the caller finds invalid is recomputed.
    assert not disk_cache.get_or_compute({**META, "data": "beef"}, compute, tmp_path)[1]
    assert not disk_cache.get_or_compute(META, compute, tmp_path, valid=lambda a: len(a["values"]) == 6)[1]
    assert len(calls) == 3


def test_an_entry_under_another_meta_is_never_used(tmp_path):
    """Two metas whose files collide (here: one file copied over the other's name) are told apart by the meta
    stored in the file."""
    disk_cache.write(META, {"values": np.zeros(3)}, tmp_path)
    other = {**META, "model_key": "xyz"}
    disk_cache.entry_path(other, tmp_path).parent.mkdir(parents=True, exist_ok=True)
    disk_cache.entry_path(other, tmp_path).write_bytes(disk_cache.entry_path(META, tmp_path).read_bytes())
    assert disk_cache.read(other, tmp_path) is None
    with pytest.raises(ValueError, match="meta"):
        disk_cache.write(META, {"meta": np.zeros(1)}, tmp_path)


def test_an_unwritable_cache_folder_costs_the_cache_not_the_result(tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    arrays, from_cache = disk_cache.get_or_compute(META, lambda: {"values": np.ones(2)}, blocked)
    assert not from_cache and arrays["values"].tolist() == [1.0, 1.0]


def test_two_processes_asking_at_once_compute_once(tmp_path):
    log = tmp_path / "calls.log"
    go = time.time() + 1.5  # after both have imported numpy and fercore
    askers = [python(ASKER % META, tmp_path, log, go) for _ in range(2)]
    outputs = [asker.communicate(timeout=60)[0].split() for asker in askers]
    assert all(asker.returncode == 0 for asker in askers)
    assert log.read_text().splitlines() == ["computed"]  # one compute() in all
    assert sorted(out[0] for out in outputs) == ["False", "True"]  # one computed, the other waited and read
    assert {out[1] for out in outputs} == {str(float(np.arange(1000).sum()))}


def test_a_reader_never_sees_a_file_half_written(tmp_path):
    writer = python(WRITER % META, tmp_path, 60)
    seen, deadline = set(), time.time() + 60
    while writer.poll() is None and time.time() < deadline:
        arrays = disk_cache.read(META, tmp_path)
        if arrays is None:  # before the first write only
            assert not seen
            continue
        values = arrays["values"]
        assert values.shape == (1_000_000,) and values.min() == values.max(), "a torn entry was read"
        seen.add(float(values[0]))
    assert writer.wait(timeout=60) == 0
    assert len(seen) >= 3  # the reader really read while the writer replaced the entry
    assert not [p for p in Path(tmp_path).rglob("*.tmp")]  # no temporary file left behind
