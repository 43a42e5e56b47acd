"""Nothing is lost: real processes killed with SIGKILL at every step of a trial and of the report,
stopped with SIGTERM, and several processes running one study at once, on SQLite and on the
journal file storage. After each, the study's records must be whole (see `assert_whole`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from autoprune.search import BASELINE_ATTR, RUN_ID_ATTR
from autoprune.steps import STEPS
from autoprune.storage import open_storage
from conftest import study_overrides

N_TRIALS = 3
PAUSE_TIMEOUT_S = 240


def command(tmp_path: Path, cache: Path, name: str, storage: str | None = None, trials: int = N_TRIALS) -> list[str]:
    """A real `autoprune` study, small: one uniform baseline, then the sampler."""
    overrides = [
        *study_overrides(tmp_path, name=name, trials=trials),
        f"calibration.cache_dir={cache}",  # shared by the tests: calibration once
        "data.calib_windows=4",
        "data.eval_windows=4",
        "++data.calibration.max_chars=100000",  # tokenize no more text than these windows need
        "++data.evaluation.max_chars=20000",
        "space.prune.metric.choices=[wanda]",
        "baselines.allocations=[uniform]",
        "baselines.sparsities=[0.5]",
        "study.heartbeat_interval=1",
    ]
    if storage:
        overrides.append(f"study.storage={storage}")
    return [sys.executable, "-m", "autoprune", *overrides]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stats")


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def ctrl_c_on() -> None:
    """SIGINT back to its default in the study's process, which Python then turns into Ctrl-C
    (KeyboardInterrupt): a shell without job control starts background commands, such as a test
    run started with `&`, with SIGINT ignored, and their children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_paused(argv: list[str], cwd: Path, step: str) -> subprocess.Popen:
    """Start a study that stops at `step` (see autoprune.steps) and wait until it is there."""
    marker = cwd / f"paused-{step}"
    env = {**os.environ, "AUTOPRUNE_PAUSE_AT": step, "AUTOPRUNE_PAUSE_FILE": str(marker)}
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ctrl_c_on,
    )
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"the study ended before reaching {step}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the study did not reach {step} in {PAUSE_TIMEOUT_S} s")
        time.sleep(0.2)
    return process


def load(tmp_path: Path, name: str, storage: str | None = None):
    study = optuna.load_study(study_name=name, storage=open_storage(storage or f"sqlite:///{tmp_path}/optuna.db"))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("autoprune").experiment_id], filter_string=f"tags.`autoprune.study` = '{name}'"
    )
    parents = [r for r in runs if r.data.tags.get("autoprune.role") == "study"]
    children = [r for r in runs if r.data.tags.get("autoprune.role") == "trial"]
    return study, client, parents, children


def assert_whole(tmp_path: Path, name: str, storage: str | None = None, n_trials: int = N_TRIALS) -> list:
    """Exactly n_trials COMPLETE trials, each matched by one FINISHED child run with its values;
    no child run left RUNNING; one FINISHED parent run whose Pareto table has one row per front trial."""
    study, client, parents, children = load(tmp_path, name, storage)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials, [(t.number, t.state) for t in trials]
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert [r.info.status for r in children].count("RUNNING") == 0
    numbers = [int(r.data.tags["autoprune.trial"]) for r in children]
    assert len(numbers) == len(set(numbers)), "two child runs for one trial"
    by_id = {r.info.run_id: r for r in children}
    objectives = study.user_attrs["autoprune.objectives"]
    for trial in complete:
        child = by_id[trial.user_attrs[RUN_ID_ATTR]]
        assert child.info.status == "FINISHED" and int(child.data.tags["autoprune.trial"]) == trial.number
        assert [child.data.metrics[o] for o in objectives] == pytest.approx(trial.values)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    front = [r for r in children if r.data.tags.get("autoprune.is_pareto") == "true"]
    table = json.loads(
        Path(client.download_artifacts(parents[0].info.run_id, "pareto.json", str(tmp_path))).read_text()
    )
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert sorted(row["trial"] for row in rows) == sorted(int(r.data.tags["autoprune.trial"]) for r in front)
    return complete


# Every step once, in an order that keeps the study going: the first kill fails the baseline
# (queued again), the second lets its second attempt complete, later ones hit sampled trials, and
# the report comes last. Each process after the first starts from what the kills before it left.
KILL_ORDER = (
    "study.opened",
    "trial.claimed",
    "trial.told",
    "trial.run_created",
    "trial.run_linked",
    "trial.scored",
    "trial.closed",
    "study.reporting",
)


def test_kill_order_covers_every_step():
    assert sorted(KILL_ORDER) == sorted(STEPS)


def test_a_study_killed_at_every_step_in_turn_resumes_with_nothing_lost(tmp_path, cache):
    """SIGKILL at the first arrival at each step, one process after another, then one run to the end."""
    argv = command(tmp_path, cache, "killed", trials=5)
    for step in KILL_ORDER:
        paused = start_paused(argv, tmp_path, step)
        paused.kill()
        paused.wait()
    again = run(argv, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    complete = assert_whole(tmp_path, "killed", n_trials=5)
    baselines = [t for t in complete if t.user_attrs.get(BASELINE_ATTR)]
    assert [t.user_attrs[BASELINE_ATTR]["name"] for t in baselines] == ["uniform wanda 0.5"]
    study, *_ = load(tmp_path, "killed")
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(failed) == 4  # killed at claimed, run_created, run_linked and scored: before Optuna was told


def test_sigterm_stops_a_study_like_ctrl_c(tmp_path, cache):
    argv = command(tmp_path, cache, "terminated")
    paused = start_paused(argv, tmp_path, "trial.run_linked")
    paused.send_signal(signal.SIGTERM)
    output, _ = paused.communicate(timeout=120)
    assert paused.returncode == 130
    assert "autoprune: error: interrupted; resume with study.name=terminated" in output
    study, _, parents, children = load(tmp_path, "terminated")
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]  # the baseline, queued again
    assert parents[0].info.status == "KILLED" and [c.info.status for c in children] == ["KILLED"]
    again = run(argv, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_whole(tmp_path, "terminated")


@pytest.mark.parametrize("storage, processes", [("sqlite", 3), ("journal", 2)])  # each storage, 2 and 3 at once
def test_processes_started_together_share_one_study(tmp_path, cache, processes, storage):
    uri = f"sqlite:///{tmp_path}/optuna.db" if storage == "sqlite" else f"journal:///{tmp_path}/optuna.log"
    argv = command(tmp_path, cache, "shared", uri, trials=8)
    started = [
        subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(processes)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in started]
    assert [process.returncode for process in started] == [0] * processes, "\n\n".join(outputs)
    complete = assert_whole(tmp_path, "shared", uri, n_trials=8)
    study, *_ = load(tmp_path, "shared", uri)
    assert not [t for t in study.get_trials() if t.state == TrialState.FAIL]  # no process failed another's trial
    assert study.user_attrs["autoprune.workers"] == processes
    seeds = {
        line.split("sampler seed ")[1].rstrip(")")
        for out in outputs
        for line in out.splitlines()
        if "sampler seed" in line
    }
    assert len(seeds) == processes - 1  # every process after the first samples with its own seed
    owners = {t.user_attrs["autoprune.owner"] for t in complete}
    assert len(owners) >= 2, "the processes did not share the trials"
