"""The Ray Tune backend for real: a local Ray of 2 CPUs running 2 trials at once on the embedded
model, its driver killed with SIGKILL after its first completed trial, then stopped with Ctrl-C,
then run to the end. After each, no process of that Ray may be left, and at the end the study's
records must be whole, as a local study's are (`test_resilience.assert_whole`), with nothing
written outside the study's directory and Ray's temp dir."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_resilience import assert_whole, command, load, run, start_paused

N_TRIALS = 5
RAY = ["search.backend=ray", "ray.num_cpus=2", "ray.max_concurrent_trials=2"]
ANY_STUDY_WRITES = (".config/mlflow/", ".cache/matplotlib/")  # MLflow's telemetry id, matplotlib's font cache
GONE_WITHIN_S = 15  # Ray's own agents outlive a killed driver by about a minute: the reaper must be faster


def ray_processes(ray_tmp: str) -> list[str]:
    """The live processes (zombies are not) of the Ray this test's studies start: those whose
    environment holds `RAY_TMPDIR=<ray_tmp>` or that have a file open in that directory (a
    process that sets its title, as Ray's agents do, may overwrite the environment /proc shows,
    but every process of that Ray keeps its log files open there)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environment = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            files = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        in_ray_tmp = f"RAY_TMPDIR={ray_tmp}".encode() in environment or any(f.startswith(ray_tmp + "/") for f in files)
        if in_ray_tmp and state != "Z" and proc.name != str(os.getpid()):
            found.append(f"{proc.name} {(proc / 'cmdline').read_bytes()[:80]!r}")
    return found


def wait_until_gone(ray_tmp: str, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := ray_processes(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return left


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """The study's directory; HOME an empty directory and Ray's temp dir a fresh short one (a Unix
    socket path must stay under 108 characters), both inherited by the study's processes."""
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="ap-ray-")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    study = tmp_path / "study"
    study.mkdir()
    return study, home, ray_tmp


def test_a_ray_study_killed_then_interrupted_resumes_with_nothing_lost_and_no_ray_left(isolated):
    study, home, ray_tmp = isolated
    argv = [*command(study, study / "stats", "ray", trials=N_TRIALS), *RAY]

    killed = start_paused(argv, study, "trial.closed")  # the first trial is complete and recorded
    killed.kill()
    killed.wait()
    assert wait_until_gone(ray_tmp, GONE_WITHIN_S) == []
    (study / "paused-trial.closed").unlink()  # start_paused waits for it to appear again

    interrupted = start_paused(argv, study, "trial.closed")  # a worker is busy with the next trial
    interrupted.send_signal(signal.SIGINT)
    try:
        output, _ = interrupted.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        interrupted.kill()  # no driver left paused behind a failed test
        raise
    assert interrupted.returncode == 130, output
    assert "autoprune: error: interrupted; resume with study.name=ray" in output
    assert ray_processes(ray_tmp) == []  # stopped in the driver's finally, not by the reaper
    optuna_study, _, parents, children = load(study, "ray")
    assert not [t for t in optuna_study.get_trials() if t.state == TrialState.RUNNING]
    assert parents[0].info.status == "KILLED" and "RUNNING" not in [c.info.status for c in children]

    finished = run(argv, study)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert ray_processes(ray_tmp) == []
    assert sorted(os.listdir(study)) == [  # the stores, the statistics, Tune's files; the test's pause marker
        "mlflow.db",
        "mlflow.db.autoprune-lock",
        "mlruns",
        "optuna.db",
        "optuna.db.autoprune-lock",
        "paused-trial.closed",
        "ray_tune",
        "stats",
    ]
    complete = assert_whole(study, "ray", n_trials=N_TRIALS)  # one FINISHED child run per trial, under one parent
    _, _, [parent], children = load(study, "ray")
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({t.user_attrs["autoprune.owner"] for t in complete}) == 3  # each of the three drivers recorded some

    ran = len(re.findall(r"^trial +\d+ \[\d+/5\]", finished.stdout, re.MULTILINE))
    assert ran >= 3  # two worker processes ran them all, each building its context on its first trial only
    assert f"ray: {ran} trials on 2 worker processes, which built the context 2 times" in finished.stdout
    written = [str(path.relative_to(home)) for path in home.rglob("*") if path.is_file()]
    assert [path for path in written if not path.startswith(ANY_STUDY_WRITES)] == []  # no ~/.ray, no ~/ray_results
    assert sorted(os.listdir(study / "ray_tune")) == ["ray"]
