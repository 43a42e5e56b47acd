"""What runs inside a Ray worker process: one trial at a time, on a context built once per process.

The driver sends the study's resolved config and the names of the baselines still to run (never a
model): the first trial of a worker process builds the context from them (`autoprune.builder`:
the model, the data, the calibration statistics, loaded from the statistics store when the driver
already collected them, and the compressors' and scorers' dense preparations), and every later
trial of the study in that process reuses it, since Tune reuses the actor (`reuse_actors=True`).
A trial only compresses, measures and restores (`autoprune.trial.run_trial`); the driver records
everything, so a worker needs no access to the study's stores. A trial that raises is sent back as
its exception and traceback, for the driver to record it as failed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from ray import tune

from autoprune.builder import build_context, prepare_components
from autoprune.config import AutopruneConfig
from autoprune.context import StudyContext
from autoprune.fidelity import Gate, TrialStopped
from autoprune.plan import Plan, prepare
from autoprune.trial import TrialError, TrialResult, run_trial

OUTCOME_KEY = "autoprune_outcome"  # the one key of a Tune result that holds what the trial did
# A trial's Tune config: {"number": Optuna's trial number, "sample": the sample, "gate": encode(Gate | None)}


@dataclass(frozen=True)
class WorkerJob:
    """What every worker process of a study needs to build its context: paths and settings only."""

    config_yaml: str  # the driver's resolved config, study.name included
    baselines: tuple[str, ...]  # the baselines still to run, which the compressors prepare for
    threads: int  # torch threads: the trial's CPUs
    cwd: str  # the driver's directory, which relative paths in the config are relative to

    @property
    def key(self) -> str:
        return hashlib.sha256(repr((self.config_yaml, self.baselines)).encode()).hexdigest()


@dataclass
class WorkerOutcome:
    """One trial as the worker ran it: its result, the cheap stage the gate stopped it at, or the
    error it raised."""

    result: TrialResult | None
    error: BaseException | None = None
    traceback: str = ""
    built_s: float | None = None  # seconds this trial spent building the process's context (its first)
    stopped: tuple[str, int, dict[str, dict[str, float]]] | None = None  # TrialStopped's stage, dominators, stages
    pid: int = field(default_factory=os.getpid)


_built: dict[str, tuple[Plan, StudyContext]] = {}  # this process's study, by WorkerJob.key


def study_context(job: WorkerJob) -> tuple[Plan, StudyContext, float | None]:
    """The plan and dense context of the job's study, built on this process's first trial of it;
    with the seconds that took (None when they were already built)."""
    if job.key in _built:
        return (*_built[job.key], None)
    _built.clear()  # another study: let the last one's model go first
    started = time.perf_counter()
    config = OmegaConf.merge(OmegaConf.structured(AutopruneConfig), OmegaConf.create(job.config_yaml))
    plan = prepare(config, probe=False)  # type: ignore[arg-type]
    baselines = [baseline for baseline in plan.baselines if baseline.name in job.baselines]
    seconds: defaultdict[str, list[float]] = defaultdict(list)  # the driver reports the study's own timings
    context = build_context(plan, seconds, baselines)
    prepare_components(plan, context, seconds, baselines)
    _built[job.key] = (plan, context)
    return plan, context, time.perf_counter() - started


def run_sample(job: WorkerJob, sample: dict[str, dict[str, Any]], gate: Gate | None = None) -> WorkerOutcome:
    """One trial of the job's study, checked at its cheap stages by the driver's `gate` (multi-fidelity,
    or None); an error, in the build or the trial, is returned, not raised."""
    try:
        plan, context, built_s = study_context(job)
    except Exception as error:  # recorded as the trial's failure by the driver; the worker goes on
        return WorkerOutcome(None, _sendable(error), traceback.format_exc())
    compressors = [compressor for compressor in plan.compressors if compressor.name in sample]
    try:
        return WorkerOutcome(run_trial(context, compressors, plan.scorers, sample, gate), built_s=built_s)
    except TrialStopped as stopped:  # not an error: the driver records it as PRUNED
        return WorkerOutcome(None, built_s=built_s, stopped=(stopped.stage, stopped.dominators, stopped.stages))
    except Exception as error:
        return WorkerOutcome(None, _sendable(error), traceback.format_exc(), built_s)


def _sendable(error: Exception) -> Exception:
    """The error itself when it survives pickling, else its type and message as a TrialError."""
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:
        return TrialError(f"{type(error).__name__}: {error}")


def encode(value: Any) -> str:
    """A value as one string in a Tune config or result, which Tune flattens, copies and logs."""
    return base64.b64encode(pickle.dumps(value)).decode("ascii")


def decode(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


class TrialWorker(tune.Trainable):
    """A Tune trainable whose every trial is one step: run the sample, report the outcome, done.
    `reset_config` accepts the next trial, so Tune keeps the actor, and with it the context."""

    def setup(self, config: dict[str, Any], job: WorkerJob) -> None:
        self.job, self.config = job, config
        torch.set_num_threads(job.threads)
        if Path(job.cwd).is_dir():  # the same directory as the driver's, where this machine has it
            os.chdir(job.cwd)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.config = new_config
        return True

    def step(self) -> dict[str, Any]:
        outcome = run_sample(self.job, self.config["sample"], decode(self.config["gate"]))
        return {"done": True, OUTCOME_KEY: encode(outcome)}
