"""The Ray Tune backend (`search.backend=ray`): the study's trials run in Ray worker processes,
several at once, on this machine or on a Ray cluster, through `ray.tune.Tuner` with Ray's
`OptunaSearch` over the study's own Optuna study (`autoprune.backends.ray_searcher`).

What runs where:

- this process (the driver) opens the study, builds the dense context once (for the parent run's
  dense figures, the per-layer counts the sampler needs and the statistics store), then asks,
  claims and records every trial: Optuna's storage and MLflow are written from here alone, in the
  local backend's order, so resuming, the Pareto report and a kill at any step behave the same;
- each worker process (`autoprune.backends.ray_worker`) builds the context from the config on its
  first trial and keeps it for the rest (Tune reuses the actor), then compresses, measures and
  restores one trial at a time with `ray.resources_per_trial.cpu` torch threads.

Ray itself: `ray.address` unset starts a Ray instance on this machine with `ray.num_cpus` CPUs for
the study and stops it when the study ends, however it ends (`ray.shutdown()` in a `finally`; a
watcher process, `autoprune.backends.ray_reaper`, follows its process tree and stops what is left
of it after the shutdown, or at once if this process is killed outright). `ray.address=auto` or
HOST:PORT joins a running cluster and leaves it running. Tune keeps its experiment files in
`ray_tune/<study>` beside the study's storage file (the current directory for a database
server); nothing is written to the home directory.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from autoprune.backends import Backend, ray_reaper
from autoprune.backends.ray_reaper import MARKER
from autoprune.backends.study_run import StudyRun
from autoprune.config import AutopruneConfig, RayConfig
from autoprune.errors import ConfigError
from autoprune.probes import RayAddress
from autoprune.storage import storage_file

log = logging.getLogger("autoprune")
SHUTDOWN_GRACE_S = 10.0  # after ray.shutdown(), how long the instance's processes get to exit before they are killed
TUNE_ENVIRONMENT = {
    "TUNE_DISABLE_SIGINT_HANDLER": "1",  # Ctrl-C stops the study as it stops a local one
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # the driver records the trials; no CSV/JSON/TensorBoard copies
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # a result holds the worker's outcome, not Tune metrics
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # workers stay where relative paths of the config point
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0, Tune prints no tables of its own: the study logs each trial
}
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class RayTuneBackend(Backend):
    """Trials run on Ray Tune workers; this process claims and records them (see the module)."""

    name = "ray"

    def check(self, config: AutopruneConfig, probe: bool) -> None:
        settings = config.ray
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "search.backend=ray needs Ray Tune, which is not installed; "
                "pip install 'ray[tune]' (or install autoprune with its ray extra)"
            )
        cpu, gpu = settings.resources_per_trial.cpu, settings.resources_per_trial.gpu
        if settings.address is not None and settings.num_cpus is not None:
            raise ConfigError(
                f"ray.num_cpus sizes the Ray a study starts, but ray.address={settings.address} joins a running "
                "cluster, which has its own; drop ray.num_cpus"
            )
        if config.model.device.startswith("cuda") and gpu == 0:
            raise ConfigError(
                f"model.device is {config.model.device}, but Ray hides the GPUs from trials that reserve none; "
                "use ray.resources_per_trial.gpu=1"
            )
        if not probe:
            return
        if settings.address is not None:
            RayAddress().check("ray.address", settings.address)
            return
        cpus = settings.num_cpus or os.cpu_count() or 1
        if cpu > cpus:
            raise ConfigError(
                f"ray.resources_per_trial.cpu is {cpu:g}, but the Ray this study starts has {cpus} CPUs; "
                f"use ray.resources_per_trial.cpu={cpus} or less"
            )
        gpus = _local_gpus()
        if gpu > gpus:
            raise ConfigError(
                f"ray.resources_per_trial.gpu is {gpu:g}, but this machine has {gpus} GPUs; "
                f"use ray.resources_per_trial.gpu={gpus} or less"
            )

    def run(self, study: StudyRun) -> None:
        from ray import tune

        from autoprune.backends.ray_searcher import StudySearcher
        from autoprune.backends.ray_worker import TrialWorker, WorkerJob

        config = study.plan.config
        settings = config.ray
        study.context = None  # the workers build their own; the driver needs only the counts it took
        job = WorkerJob(
            config_yaml=OmegaConf.to_yaml(_with_study_name(study)),
            baselines=tuple(b.name for b in study.search.unfinished_baselines(study.plan.baselines)),
            threads=max(1, int(settings.resources_per_trial.cpu)),
            cwd=os.getcwd(),
        )
        resources = {"cpu": settings.resources_per_trial.cpu, "gpu": settings.resources_per_trial.gpu}
        with _environment(TUNE_ENVIRONMENT), ray_instance(settings, study.seconds), _signal_handlers_kept():
            searcher = StudySearcher(study)
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(TrialWorker, job=job), resources),
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    num_samples=-1,  # the searcher says when the study is done
                    max_concurrent_trials=settings.max_concurrent_trials,
                    reuse_actors=True,  # a worker process keeps its context from trial to trial
                    trial_dirname_creator=lambda trial: f"trial_{trial.config['number']}",
                ),
                run_config=tune.RunConfig(
                    name=study.plan.study_name,
                    storage_path=str(tune_directory(config.study.storage)),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0),  # Optuna re-queues failed baselines
                    checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),  # nothing to resume a trial from
                ),
            )
            # Tune's result grid looks for the per-trial result files its loggers would have written
            with searcher.recording(), _quiet("ray.tune.analysis.experiment_analysis"):
                tuner.fit()
        built, workers = study.seconds.get("worker_build", []), searcher.worker_trials
        if built:
            log.info(
                f"ray: {sum(workers.values())} trials on {len(workers)} worker processes, which built the context "
                f"{len(built)} times ({max(built):.1f}s at most)"
            )


def tune_directory(storage: str) -> Path:
    """Where Tune keeps its experiment files: `ray_tune/` beside the study's storage file, or in the
    current directory for a database server."""
    path = storage_file(storage)
    return ((path.parent if path is not None else Path.cwd()) / "ray_tune").resolve()


def _with_study_name(study: StudyRun) -> Any:
    """The resolved config with the study's name in it (a fresh name is chosen once, by the driver)."""
    resolved = OmegaConf.create(OmegaConf.to_container(study.plan.resolved, resolve=True))
    resolved.study.name = study.plan.study_name
    return resolved


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (Ray's processes started in it inherit them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Tune installs a SIGUSR1 handler and never removes it: put back what the process had."""
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


@contextmanager
def ray_instance(settings: RayConfig, seconds: defaultdict[str, list[float]]) -> Iterator[None]:
    """Ray for the study: a running cluster joined (`ray.address`), or an instance on this machine
    started here and always stopped at the end, with a watcher that stops it should this process
    be killed. A Ray this process had already started is used as it is and left running. The time
    to start and to stop it goes to `seconds` (`ray_start`, `ray_stop`)."""
    import ray

    if ray.is_initialized():
        yield
        return
    started = time.perf_counter()
    if settings.address is not None:
        ray.init(address=settings.address, log_to_driver=False, logging_level=logging.WARNING)
        log.info(f"ray: joined the cluster at {settings.address}: {_cpus(ray)} CPUs")
    else:
        instance = uuid.uuid4().hex
        _use_own_token()
        with _environment({MARKER: instance}), _quiet("ray._private.authentication"):
            ray.init(
                address="local",  # never RAY_ADDRESS's cluster: unset means a Ray of the study's own
                num_cpus=settings.num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        reaper = _start_reaper(instance)
        log.info(f"ray: started on this machine with {_cpus(ray)} CPUs (stopped when the study ends)")
    seconds["ray_start"].append(time.perf_counter() - started)
    try:
        yield
    finally:
        started = time.perf_counter()
        ray.shutdown()
        if settings.address is None:
            reaper.terminate()  # the watcher stops what is left, once its workers had a moment to exit
            reaper.wait()  # at most SHUTDOWN_GRACE_S + KILL_FOR_S
        seconds["ray_stop"].append(time.perf_counter() - started)


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from `logger` in the block (Ray warns that the token authentication it was asked
    for is on)."""
    previous = logging.getLogger(logger).level
    logging.getLogger(logger).setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.getLogger(logger).setLevel(previous)


def _cpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("CPU", 0))


def _use_own_token() -> None:
    """Token authentication for a Ray the study starts, without the token file Ray would otherwise
    write to ~/.ray: a token of this process's own in its environment, which Ray reads and its
    processes inherit. It stays there, since Ray keeps the first token it loads for the process.
    Nothing when the user has configured Ray's authentication (its variables or that file)."""
    if any(key in os.environ for key in _AUTH_VARS) or (Path.home() / ".ray" / "auth_token").exists():
        return
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def _start_reaper(instance: str) -> subprocess.Popen:
    """The watcher that stops the Ray instance marked `instance` once this process has shut it down
    or is gone (run as a plain file: it imports nothing of the package, which may be changing
    under it)."""
    environment = {key: value for key, value in os.environ.items() if key != MARKER}
    return subprocess.Popen(
        [sys.executable, "-I", ray_reaper.__file__, str(os.getpid()), instance, str(SHUTDOWN_GRACE_S)],
        env=environment,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for the study does not stop the watcher
    )
