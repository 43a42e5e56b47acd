"""The flow of one study: validate, load, calibrate once, claim and run trials, track, report the Pareto set."""

from __future__ import annotations

import logging
import platform
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autoprune import __version__
from autoprune.backends import load_backend
from autoprune.backends.study_run import StudyRun, fail_abandoned, front_hypervolume
from autoprune.builder import build_context, prepare_components
from autoprune.errors import AutopruneError, Interrupted
from autoprune.pareto import pareto_front
from autoprune.plan import Plan, prepare
from autoprune.progress import set_progress
from autoprune.registry import Registry
from autoprune.report import format_table, front_rows
from autoprune.review import finished_description, study_description, study_params, trial_name
from autoprune.review_links import dashboard_command, run_url, runs_view_url, ui_address
from autoprune.search import OptunaSearch
from autoprune.steps import reached
from autoprune.tracking import StudyOutcome, StudyTracker

log = logging.getLogger("autoprune")


@dataclass
class StudyResult:
    study_name: str
    parent_run_id: str
    rows: list[dict[str, Any]]  # one per completed trial: number, objective values, parameters
    front: list[int]  # trial numbers of the Pareto set
    ran: int  # trials run by this invocation (completed or failed)
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _open_tracking(plan: Plan, search: OptunaSearch) -> StudyTracker:
    config = plan.config
    tracker = StudyTracker(config.mlflow.tracking_uri, config.mlflow.experiment, plan.study_name)
    with search.lock():  # one parent run, however many processes start at once
        tracker.start_study(
            OmegaConf.to_yaml(plan.resolved),
            plan.space.describe(),
            {
                "autoprune.version": __version__,
                "autoprune.sampler": config.search.sampler,
                "autoprune.n_trials": str(config.search.n_trials),
                "autoprune.model": config.model.name,
                "autoprune.objectives": ",".join(plan.objectives),
                **machine_tags(plan.config.model.device),
            },
            study_params(plan),
            study_description(plan),
            plan.objectives,
            plan.directions,
        )
    return tracker


def machine_tags(device: str) -> dict[str, str]:
    """What timings depend on: the device, torch's version and its CPU threads (a resumed study on
    another machine overwrites them; trial runs keep their own figures)."""
    import torch

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else _cpu_name()
    return {
        "autoprune.device": f"{device} ({name})",
        "autoprune.torch": torch.__version__,
        "autoprune.threads": str(torch.get_num_threads()),
    }


def _cpu_name() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.machine() or "cpu"


def _report(
    plan: Plan, rows: list[dict[str, Any]], front: list[int], names: dict[int, str], tracker: StudyTracker
) -> None:
    """The front as a table, then where to review the study: its runs and parent run in MLflow's UI,
    and the command that opens the Optuna study in optuna-dashboard."""
    best_first = front_rows(rows, front, plan.objectives, plan.directions)
    if best_first:
        table = format_table([{**row, "name": names[row["trial"]]} for row in best_first], [*plan.objectives, "name"])
        log.info(f"\nPareto front ({len(best_first)} of {len(rows)} completed trials):\n{table}\n")
    base, command = ui_address(plan.config.mlflow.tracking_uri)
    start = f"start the UI with: {command}\n  " if command else ""
    log.info(
        f"review in MLflow: {start}"
        f"the study's runs:  {runs_view_url(base, tracker.experiment_id, plan.study_name)}\n"
        f"  its parent run:    {run_url(base, tracker.experiment_id, tracker.parent_id)}"
    )
    log.info(f"review in optuna-dashboard: {dashboard_command(plan.config.study.storage)}")


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a job scheduler's stop) ends a study as Ctrl-C does: the running trial is
    recorded as failed, its run as killed, and the study stays resumable."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_study(resolved: DictConfig, registry: Registry | None = None) -> StudyResult:
    """Run (or resume, or join) the study the config describes until it has `search.n_trials`
    completed trials. Several processes may run one study at once: they share its storage."""
    plan = prepare(resolved, registry)
    set_progress(plan.config.progress)
    with _terminate_as_interrupt():
        return _run(plan)


def _run(plan: Plan) -> StudyResult:
    config = plan.config
    seconds: dict[str, list[float]] = defaultdict(list)
    study_started = time.perf_counter()
    log.info(f"study {plan.study_name} (resume or extend it with study.name={plan.study_name})")
    backend = load_backend(config.search.backend)
    tracker = search = None
    try:
        search = OptunaSearch(
            config.search,
            plan.study_name,
            config.study.storage,
            plan.objectives,
            plan.directions,
            heartbeat_interval_s=config.study.heartbeat_interval,
            constraints=[str(bound) for bound in plan.constraints],
        )
        queued = search.enqueue_baselines(plan.baselines, config.search.n_trials)
        if queued:
            names = ", ".join(baseline.name for baseline in queued)
            log.info(f"baselines: {len(queued)} of {len(plan.baselines)} queued ahead of the sampler: {names}")
        done = search.count_complete()
        missing = config.search.n_trials - done
        fail_abandoned(search)  # before sizing the statistics: a killed baseline is queued again
        # Load and calibrate before touching MLflow, so a bad model leaves no empty parent run behind.
        pending = search.unfinished_baselines(plan.baselines)
        context = build_context(plan, seconds, pending) if missing > 0 else None
        dense = prepare_components(plan, context, seconds, pending) if context is not None else {}
        started = time.perf_counter()
        tracker = _open_tracking(plan, search)
        tracker.log_study_metrics(dense)
        seconds["tracking_once"].append(time.perf_counter() - started)

        run = StudyRun(plan, search, tracker, context, seconds)
        del context  # held by the run alone: a backend whose trials run elsewhere may let it go
        run.recover()
        reached("study.opened")
        if missing <= 0:
            log.info(
                f"study {plan.study_name} already has {done} of {config.search.n_trials} completed trials; nothing to run"
            )
        else:
            arrows = " ".join(f"{o}{'↓' if d == 'minimize' else '↑'}" for o, d in zip(plan.objectives, plan.directions))
            worker = (
                f", sampler seed {search.seed} (opening {search.worker + 1} of this study)" if search.worker else ""
            )
            log.info(
                f"search: {config.search.sampler}, {missing} trials to run ({done} of {config.search.n_trials} "
                f"complete), objectives {arrows}{worker}"
            )
            backend.run(run)

        started = time.perf_counter()
        run.recover()  # runs of trials failed while this process waited
        completed = search.completed()
        names = {t.number: trial_name(t.number, t.params, t.baseline) for t in completed}
        marked = any(t.baseline for t in completed)
        rows = [
            {
                "trial": t.number,
                **dict(zip(plan.objectives, t.values)),
                **({"baseline": t.baseline or "-"} if marked else {}),
                **t.params,
            }
            for t in completed
        ]
        complete = {t.number: t.values for t in completed}
        feasible = {t.number: t.values for t in completed if t.feasible}  # constraints keep the rest off the front
        front = pareto_front(feasible, plan.directions)
        stopped = run.stopped
        outcome = StudyOutcome(
            rows,
            front,
            plan.objectives,
            plan.directions,
            run_ids={t.number: t.run_id for t in completed if t.run_id},
            names=names,
            layers={t.number: t.layers for t in completed if t.layers},
            hypervolume=front_hypervolume(search, feasible, plan.directions),
        )
        reference = search.hypervolume_reference(complete) if complete else None
        description = finished_description(plan, rows, front, names, outcome.hypervolume, reference)
        with search.lock():  # processes finishing together write one Pareto table, not two interleaved
            tracker.finish_study(outcome, description, status="FAILED" if stopped else "FINISHED")
    except KeyboardInterrupt:
        if tracker is not None:
            tracker.abort_study()
        raise Interrupted(f"interrupted; resume with study.name={plan.study_name}") from None
    finally:
        if search is not None:
            search.close()
    seconds["tracking_once"].append(time.perf_counter() - started)
    seconds["total"].append(time.perf_counter() - study_started)
    _report(plan, rows, front, names, tracker)
    if stopped:
        raise AutopruneError(
            f"stopped after {run.failures} failed trials (search.max_failures={run.max_failures}); "
            f"last error: {run.last_error}"
        )
    return StudyResult(plan.study_name, tracker.parent_id, rows, front, run.ran, seconds)
