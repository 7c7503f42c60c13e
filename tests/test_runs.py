"""fercore.runs: the one atomic write, the JSON files of a run, which folders are runs, the cache folder."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from fercore import runs


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("content, expected", [(b"\x00bytes\xff", b"\x00bytes\xff"), ("text é", "text é".encode()),
                                               (lambda f: f.write(b"from a writer"), b"from a writer")])
def test_atomic_write_takes_bytes_text_or_a_writer(tmp_path, content, expected):
    path = tmp_path / "file"
    path.write_bytes(b"old")
    assert runs.atomic_write(path, content) == path
    assert path.read_bytes() == expected and leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     PermissionError(errno.EACCES, "Permission denied"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, failure):
    path = tmp_path / "last.pt"
    path.write_bytes(b"the previous checkpoint")

    def fail_halfway(f):
        f.write(b"partial")
        raise failure

    with pytest.raises(type(failure)):
        runs.atomic_write(path, fail_halfway, durable=True)
    assert path.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_concurrent_writers_of_one_file_never_mix(tmp_path):
    """The app writes from several threads of one process: each write must land whole (last one wins)."""
    path = tmp_path / "cache.npz"
    contents = [bytes([i]) * 200_000 for i in range(8)]
    errors = []

    def write_many(content):
        try:
            for _ in range(20):
                runs.atomic_write(path, content)
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=write_many, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and path.read_bytes() in contents and leftovers(tmp_path) == []


def test_json_round_trip_and_defaults(tmp_path):
    path = tmp_path / runs.HISTORY_FILE
    assert runs.read_json(path, []) == []  # missing
    runs.write_json(path, [{"epoch": 1, "val_acc": 0.5}])
    assert runs.read_json(path, []) == runs.run_history(tmp_path) == [{"epoch": 1, "val_acc": 0.5}]
    path.write_text('[{"epoch": 1, "val')  # half a file (written by something else)
    assert runs.read_json(path, "default") == "default"
    assert runs.run_config(tmp_path) == {}


def test_started_runs_include_one_without_a_checkpoint_yet(tmp_path):
    trained, starting, other = tmp_path / "trained", tmp_path / "starting", tmp_path / "notes"
    for folder in (trained, starting, other):
        folder.mkdir()
    (trained / runs.LAST).write_bytes(b"x")
    runs.write_json(starting / runs.JOB_FILE, {"pid": 1})
    (other / "readme.txt").write_text("not a run")
    os.utime(trained, (1, 1))  # older than `starting`
    assert runs.started_runs(tmp_path) == [starting, trained]  # newest first
    assert runs.list_runs(tmp_path) == [trained]  # only runs with a checkpoint to analyse
    assert runs.can_resume(trained) and not runs.can_resume(starting)
    assert runs.started_runs(tmp_path / "missing") == []


def test_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path / "cache"))
    assert runs.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("FERCORE_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runs.cache_dir() == tmp_path / "home" / ".cache" / "fercore"


def test_best_record_is_the_first_epoch_with_the_highest_validation_accuracy():
    """As training keeps best.pt: a later epoch that only ties does not replace it; records without validation
    (a run on data without a validation split) are not candidates."""
    history = [{"epoch": 1, "val_acc": 0.4}, {"epoch": 2, "val_acc": 0.6}, {"epoch": 3, "val_acc": 0.6},
               {"epoch": 4}, {"epoch": 5, "val_acc": 0.5}]
    assert runs.best_record(history)["epoch"] == 2
    assert runs.best_record([{"epoch": 1}]) is None and runs.best_record([]) is None
