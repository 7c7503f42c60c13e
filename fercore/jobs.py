"""Training runs as background processes, visible to every viewer of a run folder.

A job is `python -m fercore train|resume ...` started detached (through torchrun when it trains on several local
GPUs), with its output in `train.log`. The run folder's `job.lock` is locked with flock by whoever starts the job
and handed to the child process, which holds it for its whole life: the kernel drops the lock when the process
ends, however it ends, so a killed trainer never leaves a stale lock, and a second start on the same folder (from
any tab or process) is refused at once.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

# Torch-free on purpose: the Train page lists and starts runs without loading torch; the child process loads it.
from fercore.config import TrainConfig, config_argv
from fercore.runs import JOB_FILE, LOCK_FILE, LOG_FILE, PROGRESS_FILE, read_json, run_history, write_json

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JOB_NICENESS = 10  # the trainer yields the cores to the app and the browser when both want them


class JobError(RuntimeError):
    """A job that cannot be started or stopped, with a message for the user."""


def safe_run_dir(root, name: str) -> Path:
    """The folder for run `name` under `root`; names that could escape it (../, /, odd characters) are refused."""
    if not RUN_NAME.match(name or "") or ".." in name:
        raise JobError(f"run name {name!r} is not allowed: use letters, digits, '-', '_' and '.', up to 64, "
                       "starting with a letter or digit")
    return Path(root) / name


def _try_lock(run_dir: Path) -> int | None:
    """An fd holding the run's lock, or None when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def is_running(run_dir) -> bool:
    run_dir = Path(run_dir)
    if not (run_dir / LOCK_FILE).exists():
        return False
    fd = _try_lock(run_dir)
    if fd is None:
        return True
    os.close(fd)  # closing releases the lock we just took
    return False


def command_line(command: str, args: list[str], processes: int = 1) -> list[str]:
    """The job's command: `python -m fercore <command> ARGS --quiet`, or with `processes` > 1 the same module under
    torchrun on this machine (--standalone picks a free rendezvous port, so several jobs can run at once)."""
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    else:
        launcher = []
    return [sys.executable, *launcher, "-m", "fercore", command, *args, "--quiet"]


def start(run_dir, command: str, args: list[str], threads: int = 1, processes: int = 1) -> int:
    """Start `python -m fercore <command> ...` for `run_dir` in the background and return its pid.

    `threads` is the trainer's torch thread count (args must say the same): 1 on a 2-core machine leaves a core
    for the app. `processes` > 1 trains on that many local GPUs through torchrun (its pid is returned; stopping it
    stops its workers).
    """
    run_dir = Path(run_dir)
    fd = _try_lock(run_dir)
    if fd is None:
        raise JobError(f"{run_dir.name} is already training (started {started_at(run_dir)}): stop it first")
    try:
        argv = command_line(command, args, processes)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "passive"}  # no spinning next to the app
        (run_dir / PROGRESS_FILE).unlink(missing_ok=True)
        with open(run_dir / LOG_FILE, "ab") as log:
            log.write(f"\n$ {' '.join(argv[1:])}\n".encode())
            log.flush()
            child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=Path(__file__).resolve().parent.parent, pass_fds=(fd,),
                                     start_new_session=True)
        _lower_priority(child.pid)
        write_json(run_dir / JOB_FILE, {"pid": child.pid, "command": command, "args": args, "started": time.time()})
        return child.pid
    finally:
        os.close(fd)  # the child keeps the lock through its inherited copy


def _lower_priority(pid: int) -> None:
    """Nice the trainer, so that when the app, the browser and the trainer all want the 2 cores, a click wins and
    training waits a moment (it loses nothing while the app is idle). Set at once, before torch starts its threads,
    which inherit it."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + JOB_NICENESS))
    except (AttributeError, OSError):  # not on this platform, or the child is already gone
        pass


def start_training(run_dir, config: TrainConfig, threads: int = 1, processes: int = 1) -> int:
    """A new run of `config` in `run_dir`, with `threads` torch threads whatever config.threads says, on
    `processes` local GPUs (1: one process, on what config.device says)."""
    args = config_argv(replace(config, threads=threads))
    return start(run_dir, "train", [*args, "--out", str(run_dir)], threads, processes)


def start_resume(run_dir, epochs: int | None = None, threads: int = 1, data: str | None = None,
                 processes: int = 1) -> int:
    """Continue `run_dir` up to `epochs` in total; `data` where the run's data now lives, if it moved."""
    args = [str(run_dir), "--threads", str(threads)] + (["--epochs", str(epochs)] if epochs else []) \
        + (["--data", data] if data else [])
    return start(run_dir, "resume", args, threads, processes)


def stop(run_dir, timeout: float = 10.0) -> bool:
    """Stop a running job (SIGTERM, then SIGKILL). The last finished epoch stays in last.pt."""
    run_dir = Path(run_dir)
    if not is_running(run_dir):
        return False
    pid = read_json(run_dir / JOB_FILE, {}).get("pid")
    if not pid:
        raise JobError(f"{run_dir.name} is locked by a process fercore did not start: stop it by hand")
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait
        while time.time() < deadline and is_running(run_dir):
            time.sleep(0.1)
        if not is_running(run_dir):
            break
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if we are the parent, so no zombie keeps the pid."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def started_at(run_dir) -> str:
    started = read_json(Path(run_dir) / JOB_FILE, {}).get("started")
    return time.strftime("%H:%M:%S", time.localtime(started)) if started else "earlier"


@dataclass
class JobStatus:
    running: bool
    progress: dict  # the trainer's progress.json ({} before its first batch)
    history: list   # one record per finished epoch
    log_tail: str   # the end of train.log, to show why a run failed


def status(run_dir) -> JobStatus:
    run_dir = Path(run_dir)
    log = run_dir / LOG_FILE
    tail = log.read_bytes()[-2000:].decode(errors="replace") if log.exists() else ""
    return JobStatus(running=is_running(run_dir), progress=read_json(run_dir / PROGRESS_FILE, {}),
                     history=run_history(run_dir), log_tail=tail)


def any_running(root) -> bool:
    root = Path(root)
    return root.is_dir() and any(is_running(d) for d in root.iterdir() if (d / LOCK_FILE).exists())
