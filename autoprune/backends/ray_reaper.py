"""Stops what is left of a Ray instance a study started: after `ray.shutdown()`, and when the study
process was killed outright (SIGKILL, the OOM killer) and could not shut it down.

Every process of that instance inherited the marker `AUTOPRUNE_RAY_INSTANCE=<id>` from the study's
environment, so they are found by it whatever Ray named them. Ray stops its GCS server and raylet
with the process that started them, but its agents linger for up to a minute after, and worker
processes take a moment to exit after a shutdown. The study starts this file as a watcher, in its
own session, when it starts Ray; once the study process is gone the watcher kills the marked
processes. Standard library only (it must start even when the package cannot be imported); Linux
only (it reads /proc).

    python ray_reaper.py <study pid> <instance id>
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

MARKER = "AUTOPRUNE_RAY_INSTANCE"
POLL_S = 0.25
SETTLE_S = 2.0  # seconds with no process of the instance left before the reaper is done
KILL_FOR_S = 30.0  # the longest it keeps killing


def started(pid: int) -> str | None:
    """When the process started (clock ticks since boot), None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def marked(instance: str) -> list[int]:
    """The live processes of the Ray instance `instance` (this process aside)."""
    entry = f"{MARKER}={instance}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environment = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if entry in environment and started(int(proc.name)):
            found.append(int(proc.name))
    return found


def stop_instance(instance: str, grace_s: float) -> int:
    """Give the instance's processes `grace_s` seconds to exit, then kill the rest, again and
    again until none has shown up for `SETTLE_S` (a dying raylet may still be starting an agent
    when the first are killed) or `KILL_FOR_S` have passed; returns how many were killed."""
    deadline = time.monotonic() + grace_s
    while (left := marked(instance)) and time.monotonic() < deadline:
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
        left = marked(instance)
    return len(killed)


def watch(study_pid: int, instance: str) -> None:
    """Wait for the study process to end; if it did not stop its Ray itself (it sends SIGTERM to
    this watcher when it did), stop what is left."""
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    study = started(study_pid)
    while study is not None and started(study_pid) == study and not stopping:
        time.sleep(POLL_S)
    if not stopping:
        killed = stop_instance(instance, grace_s=0)
        print(f"autoprune: study process {study_pid} is gone; stopped {killed} processes of its Ray", file=sys.stderr)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
