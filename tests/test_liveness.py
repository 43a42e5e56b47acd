"""Which trials are abandoned: owners on this machine by their process, others by their heartbeat."""

import subprocess
import sys
import time
from datetime import datetime, timedelta

import optuna
from optuna.trial import TrialState

from autoprune.liveness import HEARTBEAT_ATTR, OWNER_ATTR, Heartbeat, abandoned, this_process
from autoprune.search import worker_seed


def running_trial(**user_attrs):
    return optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=user_attrs)


def dead_process_owner() -> str:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    owner = (
        this_process().rsplit(":", 2)[0]
        + f":{child.pid}:"
        + open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[19]
    )
    assert not abandoned(running_trial(**{OWNER_ATTR: owner}), grace_s=3600)  # alive
    child.kill()
    deadline = time.monotonic() + 10
    while not abandoned(running_trial(**{OWNER_ATTR: owner}), grace_s=3600):  # killed, not yet reaped: a zombie
        assert time.monotonic() < deadline, "a killed process still counts as alive"
        time.sleep(0.05)
    child.wait()
    return owner


def test_a_trial_of_a_dead_process_is_abandoned_at_once():
    assert abandoned(running_trial(**{OWNER_ATTR: dead_process_owner()}), grace_s=3600)


def test_a_trial_of_this_process_is_not_abandoned():
    assert not abandoned(running_trial(**{OWNER_ATTR: this_process(), HEARTBEAT_ATTR: 0.0}), grace_s=1)


def test_a_trial_without_owner_is_abandoned():
    assert abandoned(running_trial(), grace_s=3600)


def test_a_trial_on_another_machine_is_judged_by_its_heartbeat():
    elsewhere = "another-machine:123:456"
    now = time.time()
    assert not abandoned(running_trial(**{OWNER_ATTR: elsewhere, HEARTBEAT_ATTR: now - 5}), grace_s=30, now=now)
    assert abandoned(running_trial(**{OWNER_ATTR: elsewhere, HEARTBEAT_ATTR: now - 31}), grace_s=30, now=now)
    silent = running_trial(**{OWNER_ATTR: elsewhere})
    silent.datetime_start = datetime.now() - timedelta(seconds=60)
    assert abandoned(silent, grace_s=30)


def test_the_heartbeat_beats_while_the_block_runs():
    beats = []
    with Heartbeat(lambda: beats.append(time.monotonic()), interval_s=0.05):
        time.sleep(0.3)
    count = len(beats)
    time.sleep(0.15)
    assert count >= 3 and len(beats) == count  # and stops with the block


def test_every_process_of_a_study_samples_with_its_own_seed():
    seeds = [worker_seed(7, worker) for worker in range(100)]
    assert seeds[0] == 7 and len(set(seeds)) == 100 and all(0 <= s < 2**32 for s in seeds)
