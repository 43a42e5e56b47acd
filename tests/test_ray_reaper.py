"""The watcher that stops a Ray instance, on real processes shaped like one: a marked process (the
raylet) whose child shows no marker (an agent that rewrote its environment when it set its
title) and outlives it. The watcher must stop that child too, when the study process is killed
and when the study says Ray was shut down, and must leave alone the study process and anything
that is not of the instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from autoprune.backends import ray_reaper
from autoprune.backends.ray_reaper import MARKER

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
RAYLET = """
import subprocess, sys, time
agent = subprocess.Popen({sleeper!r}, env={{}})  # no marker in its environment
open(sys.argv[1], "w").write(str(agent.pid))
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


@pytest.fixture
def instance(tmp_path):
    """A study process, a marked raylet with its unmarked agent, a bystander, and the watcher over
    them; every process that is left is killed at the end."""
    started: list[subprocess.Popen] = []

    def start(argv, **kwargs) -> subprocess.Popen:
        started.append(subprocess.Popen(argv, **kwargs))
        return started[-1]

    instance_id = uuid.uuid4().hex
    marked = {**os.environ, MARKER: instance_id}
    study = start(SLEEPER, env=marked)  # marked as well: the watcher must spare it all the same
    agent_file = tmp_path / "agent"
    raylet = start([sys.executable, "-c", RAYLET.format(sleeper=SLEEPER), str(agent_file)], env=marked)
    bystander = start(SLEEPER)
    assert wait_for(lambda: agent_file.exists() and agent_file.read_text(), 30)
    agent = int(agent_file.read_text())
    watcher = start(
        [sys.executable, "-I", ray_reaper.__file__, str(study.pid), instance_id, "1.0"],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(1.5)  # the watcher has read the tree (it looks every LOOK_EVERY_S)
    yield study, raylet, agent, bystander, watcher
    for process in started:
        process.kill()
        process.wait()
    if alive(agent):
        os.kill(agent, signal.SIGKILL)


def test_a_killed_study_leaves_no_process_of_its_ray_even_one_without_the_marker(instance):
    study, raylet, agent, bystander, watcher = instance
    raylet.kill()  # the raylet goes first, as Ray's own does with its driver: the agent is orphaned
    raylet.wait()
    study.kill()
    study.wait()
    _, stderr = watcher.communicate(timeout=30)
    assert watcher.returncode == 0
    assert not alive(agent)
    assert f"study process {study.pid} is gone; stopped 1 processes of its Ray" in stderr
    assert alive(bystander.pid)


def test_a_shut_down_ray_is_stopped_after_the_grace_period_and_the_study_is_spared(instance):
    study, raylet, agent, bystander, watcher = instance
    raylet.kill()  # what ray.shutdown() leaves: an agent that has not exited yet
    raylet.wait()
    told = time.monotonic()
    watcher.send_signal(signal.SIGTERM)
    assert alive(agent)
    _, stderr = watcher.communicate(timeout=30)
    assert watcher.returncode == 0 and stderr == ""
    assert time.monotonic() - told >= 1.0  # the grace period passed first
    assert not alive(agent)
    assert alive(study.pid) and alive(bystander.pid)
