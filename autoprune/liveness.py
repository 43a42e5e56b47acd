"""Which trials are still being worked on, so a process that joins a study fails only the trials
of dead workers.

Each trial records its owner process (`host:pid:start-time`) and a heartbeat (unix seconds,
refreshed every `study.heartbeat_interval` seconds while it runs). A trial is abandoned when its
owner is a process of this machine that no longer exists, or, for an owner on another machine,
when its last heartbeat is older than the grace period (three heartbeat intervals).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from optuna.trial import FrozenTrial

OWNER_ATTR = "autoprune.owner"
HEARTBEAT_ATTR = "autoprune.heartbeat"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None when it does not exist
    or has already exited (a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def this_process() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or 0}"


def owner_alive(owner: str) -> bool | None:
    """True or False for a process of this machine; None when it runs elsewhere."""
    host, pid, start = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    if not Path("/proc").is_dir():  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _start_ticks(int(pid)) == start


def abandoned(trial: FrozenTrial, grace_s: float, now: float | None = None) -> bool:
    """Whether no live process works on `trial` any more (its owner is gone or silent).

    A trial without an owner was claimed by a process that died before recording itself (the
    claim holds the study lock until it has), or by a version that did not record owners.
    """
    owner = trial.user_attrs.get(OWNER_ATTR)
    if owner is None:
        return True
    alive = owner_alive(owner)
    if alive is not None:
        return not alive
    last = trial.user_attrs.get(HEARTBEAT_ATTR)
    if last is None:
        last = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return (now or time.time()) - float(last) > grace_s


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
