"""Stops every process of a Ray instance a study started: after `ray.shutdown()`, and when the
study process was killed outright (SIGKILL, the OOM killer) and could not shut it down.

The study starts this file as a watcher, in its own session, right after it starts Ray. The
processes Ray starts inherit the marker `AUTOPRUNE_RAY_INSTANCE=<id>` from the study's
environment, but the marker alone does not find them all: a process that sets its title (Ray's
agents do) may overwrite the environment that /proc shows, and Ray's agents are children of the
raylet, orphaned once it is gone. So while the study lives the watcher keeps the instance's
process tree (marked processes and every descendant of one, with their start times, so a reused
pid is never taken for one of them). When the study tells it Ray was shut down (SIGTERM), or the
study process is gone, it gives what is left a grace period to exit and kills the rest, again and
again until none has shown up for a while (a dying raylet may still be starting a worker).
Standard library only (it must start even when the package cannot be imported); Linux only (it
reads /proc).

    python ray_reaper.py <study pid> <instance id> <grace seconds>
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

MARKER = "AUTOPRUNE_RAY_INSTANCE"
POLL_S = 0.25
LOOK_EVERY_S = 1.0  # how often the tree is read while the study lives (a read of every process's stat)
SETTLE_S = 2.0  # seconds with no process of the instance left before the watcher is done
KILL_FOR_S = 30.0  # the longest it keeps killing


def live_processes() -> dict[int, tuple[int, str]]:
    """Every live process (zombies are not): pid -> (parent pid, start time in clock ticks since boot)."""
    table = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and (stat := _stat(int(proc.name))) is not None:
            table[int(proc.name)] = stat
    return table


def _stat(pid: int) -> tuple[int, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else (int(fields[1]), fields[19])


def started(pid: int) -> str | None:
    """When the process started, None when it is gone or a zombie."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


class Instance:
    """The processes of one Ray instance as far as they have been seen: pid -> start time."""

    def __init__(self, instance: str, spared: set[int]) -> None:
        self.entry = f"{MARKER}={instance}".encode()
        self.spared = spared  # never the study process or this one, whatever their environment says
        self.known: dict[int, str] = {}
        self._checked: dict[tuple[int, str], bool] = {}  # (pid, start) -> marked; an environment is read once

    def refresh(self) -> list[int]:
        """Look again: keep the known processes still alive, add the marked ones and every
        descendant of a known one; returns the live ones."""
        table = live_processes()
        self.known = {pid: start for pid, start in self.known.items() if table.get(pid, (0, None))[1] == start}
        for pid, (_, start) in table.items():
            if pid not in self.spared and self._marked(pid, start):
                self.known[pid] = start
        grew = True
        while grew:
            grew = False
            for pid, (parent, start) in table.items():
                if pid not in self.known and pid not in self.spared and parent in self.known:
                    self.known[pid] = start
                    grew = True
        return list(self.known)

    def _marked(self, pid: int, start: str) -> bool:
        if (pid, start) not in self._checked:
            try:
                self._checked[pid, start] = self.entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:  # gone, or not ours to read
                self._checked[pid, start] = False
        return self._checked[pid, start]

    def stop(self, grace_s: float) -> int:
        """Give the instance's processes `grace_s` seconds to exit, then kill the rest until none
        has shown up for `SETTLE_S` or `KILL_FOR_S` have passed; returns how many were killed."""
        deadline = time.monotonic() + grace_s
        while (left := self.refresh()) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        killed: set[int] = set()
        last_seen, give_up = time.monotonic(), time.monotonic() + KILL_FOR_S
        while time.monotonic() - last_seen < SETTLE_S and time.monotonic() < give_up:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
            if left:
                last_seen = time.monotonic()
            time.sleep(POLL_S)
            left = self.refresh()
        return len(killed)


def watch(study_pid: int, instance: str, grace_s: float) -> None:
    """Follow the instance while the study process lives; stop it once the study says Ray was shut
    down (SIGTERM: after a grace period for its workers to exit) or is gone (at once)."""
    shut_down = False

    def on_shutdown(signum, frame):
        nonlocal shut_down
        shut_down = True

    signal.signal(signal.SIGTERM, on_shutdown)
    processes = Instance(instance, spared={study_pid, os.getpid()})
    study, next_look = started(study_pid), 0.0
    while study is not None and started(study_pid) == study and not shut_down:
        if time.monotonic() >= next_look:
            processes.refresh()
            next_look = time.monotonic() + LOOK_EVERY_S
        time.sleep(POLL_S)
    killed = processes.stop(grace_s if shut_down else 0.0)
    if not shut_down:
        print(f"autoprune: study process {study_pid} is gone; stopped {killed} processes of its Ray", file=sys.stderr)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
