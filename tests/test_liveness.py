"""Which trials are abandoned: owners on this machine by their process, others by their heartbeat."""

import subprocess
import sys
import time
from datetime import datetime, timedelta

import optuna
from optuna.trial import TrialState

from autoprune.liveness import (
    HEARTBEAT_ATTR,
    INTERVAL_ATTR,
    OWNER_ATTR,
    Heartbeat,
    abandoned,
    close_owner,
    open_owner,
)
from autoprune.search import worker_seed


def running_trial(**user_attrs):
    return optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=user_attrs)


def is_abandoned(owner=None, **attrs) -> bool:
    trial = running_trial(**({OWNER_ATTR: owner} if owner else {}), **attrs)
    return abandoned(trial, default_interval_s=1200, unowned_is_dead=True)


def test_a_trial_of_a_dead_process_on_this_machine_is_abandoned_at_once():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    host = open_owner().split(":")[0]
    start = open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[19]
    owner = f"{host}:{child.pid}:{start}:run"
    assert not is_abandoned(owner)
    child.kill()
    deadline = time.monotonic() + 10
    while not is_abandoned(owner):  # killed and not yet reaped (a zombie) already counts as dead
        assert time.monotonic() < deadline, "a killed process still counts as alive"
        time.sleep(0.05)
    child.wait()
    assert is_abandoned(owner)


def test_a_trial_of_an_open_run_of_this_process_is_not_abandoned_and_of_an_ended_one_is():
    owner = open_owner()
    assert not is_abandoned(owner, **{HEARTBEAT_ATTR: 0.0})
    close_owner(owner)
    assert is_abandoned(owner)  # a study this process ran before (the Python API, a notebook)


def test_a_trial_without_owner_is_abandoned_where_claims_are_locked_and_waits_its_grace_elsewhere():
    assert is_abandoned()
    fresh = running_trial()
    assert not abandoned(fresh, default_interval_s=10, unowned_is_dead=False)  # a claim in progress
    fresh.datetime_start = datetime.now() - timedelta(seconds=31)
    assert abandoned(fresh, default_interval_s=10, unowned_is_dead=False)


def test_a_trial_on_another_machine_is_judged_by_its_own_heartbeat_interval():
    elsewhere = "another-machine:123:456:run"
    now = time.time()

    def old(seconds, interval=None):
        attrs = {
            OWNER_ATTR: elsewhere,
            HEARTBEAT_ATTR: now - seconds,
            **({INTERVAL_ATTR: interval} if interval else {}),
        }
        return abandoned(running_trial(**attrs), default_interval_s=10, unowned_is_dead=True, now=now)

    assert not old(5) and old(31)  # three of the observer's intervals
    assert not old(31, interval=60) and old(181, interval=60)  # three of the owner's
    silent = running_trial(**{OWNER_ATTR: elsewhere})
    silent.datetime_start = datetime.now() - timedelta(seconds=60)
    assert abandoned(silent, default_interval_s=10, unowned_is_dead=True)


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
