"""Which trials are still being worked on, so a process that joins a study fails only the trials
of dead workers.

Each trial records its owner (`host:pid:start-time:run`, one `run` per study a process opens),
its heartbeat interval, and a heartbeat (unix seconds, refreshed every interval while it runs).
A trial is abandoned when its owner is a process of this machine that no longer exists (or an
earlier study of this very process that has ended), or, for an owner on another machine, when
its last heartbeat is older than GRACE_BEATS of its own intervals.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from optuna.trial import FrozenTrial

OWNER_ATTR = "autoprune.owner"
HEARTBEAT_ATTR = "autoprune.heartbeat"
INTERVAL_ATTR = "autoprune.heartbeat_interval"
GRACE_BEATS = 3  # missed heartbeats after which another machine's trial is abandoned
_open_runs: set[str] = set()  # the owners of the studies this process has open now


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None when it does not exist
    or has already exited (a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def open_owner() -> str:
    """A new owner for the trials of one study run in this process; `close_owner` ends it."""
    pid = os.getpid()
    owner = f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or 0}:{uuid.uuid4().hex[:8]}"
    _open_runs.add(owner)
    return owner


def close_owner(owner: str) -> None:
    _open_runs.discard(owner)


def owner_alive(owner: str) -> bool | None:
    """True or False for an owner on this machine; None when it runs elsewhere."""
    host, pid, start, _run = owner.rsplit(":", 3)
    if host != socket.gethostname():
        return None
    if int(pid) == os.getpid():
        return owner in _open_runs
    if not Path("/proc").is_dir():  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _start_ticks(int(pid)) == start


def abandoned(trial: FrozenTrial, default_interval_s: float, unowned_is_dead: bool, now: float | None = None) -> bool:
    """Whether no live process works on `trial` any more (its owner is gone or silent).

    A trial without an owner is dead at once where claims hold the study lock until the owner
    is recorded (`unowned_is_dead`: file storages); on a database server it may be a claim in
    progress, so it gets the grace period from its start.
    """
    owner = trial.user_attrs.get(OWNER_ATTR)
    if owner is None and unowned_is_dead:
        return True
    alive = owner_alive(owner) if owner else None
    if alive is not None:
        return not alive
    last = trial.user_attrs.get(HEARTBEAT_ATTR)
    if last is None:
        last = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    grace = GRACE_BEATS * float(trial.user_attrs.get(INTERVAL_ATTR, default_interval_s))
    return (now or time.time()) - float(last) > grace


class Heartbeat:
    """Calls `beat()` every `interval_s` seconds on a daemon thread while the block runs."""

    def __init__(self, beat: Callable[[], None], interval_s: float):
        self.beat, self.interval_s = beat, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoprune-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # a missed beat only makes the trial look older; never kill the trial for it
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
