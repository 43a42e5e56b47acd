"""The flow of one study: validate, load, calibrate once, run trials, track, report the Pareto set."""

from __future__ import annotations

import logging
import math
import re
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autoprune import __version__
from autoprune.baselines import build_baselines
from autoprune.calibration import collect_stats
from autoprune.components import Compressor, Direction, Scorer
from autoprune.config import AutopruneConfig, CalibrationConfig
from autoprune.context import StudyContext
from autoprune.data import calibration_set, check_source, evaluation_windows, read_text, tokenize
from autoprune.errors import AutopruneError, ConfigError
from autoprune.model import check_model_source, decoder_layout, load_model, model_context
from autoprune.pareto import pareto_front
from autoprune.registry import Registry, build_registry
from autoprune.report import format_table
from autoprune.search import BASELINE_ATTR, RUN_ID_ATTR, Baseline, OptunaSearch, check_search
from autoprune.space import SearchSpace
from autoprune.stats_store import StatsStore, default_cache_dir, stats_key
from autoprune.tracking import StudyTracker, expand_lists, flatten
from autoprune.trial import run_trial

log = logging.getLogger("autoprune")
CALIBRATION_MODES = ("dense-once", "sequential")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LAYER_KEY = re.compile(r"\.\d+$")


@dataclass
class Plan:
    """A study's configuration, checked against the installed plugins before any compute."""

    config: AutopruneConfig
    resolved: DictConfig
    registry: Registry
    space: SearchSpace
    compressors: list[Compressor]
    scorers: list[Scorer]
    study_name: str
    baselines: list[Baseline] = field(default_factory=list)

    @property
    def objectives(self) -> list[str]:
        return [name for scorer in self.scorers for name in scorer.objectives]

    @property
    def directions(self) -> list[Direction]:
        return [direction for scorer in self.scorers for direction in scorer.objectives.values()]


@dataclass
class StudyResult:
    study_name: str
    parent_run_id: str
    rows: list[dict[str, Any]]  # one per completed trial: number, objective values, parameters
    front: list[int]  # trial numbers of the Pareto set
    ran: int  # trials run by this invocation (completed or failed)
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def prepare(resolved: DictConfig, registry: Registry | None = None) -> Plan:
    """Check every name and range in the config; raises ConfigError with the fix."""
    config: AutopruneConfig = OmegaConf.to_object(resolved)  # type: ignore[assignment]
    registry = registry or build_registry()
    if not config.scorers:
        raise ConfigError(f"no scorers are selected; set scorers=[...] ({registry.known_phrase('scorer')})")
    scorers = [registry.scorer(name) for name in config.scorers]
    space = SearchSpace.parse(config.space)
    compressors = [registry.compressor(name) for name in space.sections]
    for compressor in compressors:
        compressor.check(config.space[compressor.name], registry)
    check_search(config.search)
    check_model_source(config.model.path, config.model.hub_id, config.model.dtype)
    if config.calibration.mode not in CALIBRATION_MODES:
        raise ConfigError(
            f"unknown calibration.mode {config.calibration.mode!r}; choose one of {', '.join(CALIBRATION_MODES)}"
        )
    if config.calibration.batch_size < 1:
        raise ConfigError(f"calibration.batch_size is {config.calibration.batch_size}; it must be at least 1")
    if config.data.calib_windows < 1 or (config.data.eval_windows is not None and config.data.eval_windows < 1):
        raise ConfigError("data.calib_windows and data.eval_windows must be at least 1 (eval_windows=null uses all)")
    check_source(config.data.calibration, "calibration")
    check_source(config.data.evaluation, "evaluation")
    study_name = config.study.name or f"{config.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if not _STUDY_NAME.match(study_name):
        raise ConfigError(f"study.name {study_name!r} may hold only letters, digits, '.', '_' and '-'")
    for allocation in config.baselines.allocations:
        try:
            registry.allocation(allocation).check(config.space.get("prune", {}))
        except ConfigError as error:
            raise ConfigError(f"baselines.allocations: {error}") from None
    baselines = build_baselines(space, config.baselines)
    plan = Plan(config, resolved, registry, space, compressors, scorers, study_name, baselines)
    if len(set(plan.objectives)) != len(plan.objectives):
        raise ConfigError(f"the scorers {config.scorers} declare the same objective twice: {plan.objectives}")
    return plan


def build_context(plan: Plan, seconds: dict[str, list[float]], baselines: Sequence[Baseline] = ()) -> StudyContext:
    """Load the model and data and collect the calibration statistics, once for the whole study
    (including what the `baselines` still to run need)."""
    config = plan.config
    started = time.perf_counter()
    model, tokenizer = load_model(config.model.path, config.model.hub_id, config.model.dtype, config.model.device)
    layout = decoder_layout(model)
    seconds["load"].append(time.perf_counter() - started)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        f"model {config.model.name}: {n_params / 1e6:.1f}M parameters, {len(layout)} decoder blocks, "
        f"{len(layout.all_linears())} prunable linears ({seconds['load'][-1]:.1f}s)"
    )

    started = time.perf_counter()
    context_length = model_context(model, config.model.context)
    data = config.data
    calibration = calibration_set(data.calibration, tokenizer, context_length, data.calib_windows, data.seed)
    evaluation = evaluation_windows(
        tokenize(tokenizer, read_text(data.evaluation), data.evaluation.special_tokens),
        context_length,
        data.eval_windows,
    )
    seconds["data"].append(time.perf_counter() - started)
    log.info(
        f"data {config.data.name}: {len(calibration)} calibration and {len(evaluation)} evaluation windows "
        f"of {context_length} tokens ({seconds['data'][-1]:.1f}s)"
    )

    started = time.perf_counter()
    settings = config.calibration
    if settings.mode == "sequential":
        log.info("calibration: sequential, each trial collects every block's statistics after pruning the ones before")
    kinds = set().union(
        *(c.stats_needed(config.space[c.name], plan.registry, settings.mode) for c in plan.compressors),
        *(plan.registry.allocation(a).needs for a in _baseline_allocations(baselines)),
    )
    dense_stats = kinds or settings.mode == "dense-once"
    stats = _calibration_stats(model, layout, calibration, kinds, settings) if dense_stats else {}
    seconds["calibration"].append(time.perf_counter() - started)
    return StudyContext(
        model, tokenizer, layout, calibration, evaluation, stats, plan.registry, settings.mode, settings.batch_size
    )


def prepare_compressors(
    plan: Plan, context: StudyContext, seconds: dict[str, list[float]], baselines: Sequence[Baseline] = ()
) -> None:
    """Let each compressor compute on the dense model, once, what its trials (and the baselines') share."""
    started = time.perf_counter()
    space = plan.config.space
    for compressor in plan.compressors:
        compressor.prepare(context, space[compressor.name])
        for baseline in baselines:
            if compressor.name in baseline.overrides:
                compressor.prepare(context, {**space[compressor.name], **baseline.overrides[compressor.name]})
    seconds["prepare"].append(time.perf_counter() - started)


def _baseline_allocations(baselines: Sequence[Baseline]) -> set[str]:
    return {baseline.overrides.get("prune", {}).get("allocation", "uniform") for baseline in baselines}


def _calibration_stats(model, layout, windows, kinds: set[str], settings: CalibrationConfig):
    """Statistics from the store when this model, these windows and kinds were seen before, else one pass."""
    started = time.perf_counter()
    store = (
        StatsStore(Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()) if settings.cache else None
    )
    key = stats_key(model, windows, kinds) if store else ""
    stats = store.load(key) if store else None
    if stats is not None:
        log.info(
            f"calibration: statistics of {len(stats)} linears loaded from {store.path(key)}, "
            f"0 calibration forward passes ({time.perf_counter() - started:.1f}s)"
        )
        return stats
    stats = collect_stats(model, layout, windows, kinds, settings.batch_size)
    passes = math.ceil(len(windows) / settings.batch_size)
    where = f", stored in {store.save(key, stats)}" if store else ""
    log.info(
        f"calibration: input statistics of {len(stats)} linears from {windows.numel():,} tokens in {passes} "
        f"calibration forward passes, once for all trials{where} ({time.perf_counter() - started:.1f}s)"
    )
    return stats


def _summary(params: dict[str, Any]) -> str:
    """The sampled scalar parameters of a trial (per-layer families are in MLflow)."""
    return " ".join(
        f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in params.items()
        if not _LAYER_KEY.search(key)
    )


def _numeric_info(info: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in expand_lists(info).items() if isinstance(value, (int, float))}


class _StudyRun:
    """The mutable state of one invocation: the search, the tracker, the timings, the failures."""

    def __init__(self, plan: Plan, search: OptunaSearch, tracker: StudyTracker, context: StudyContext | None, seconds):
        self.plan, self.search, self.tracker, self.context, self.seconds = plan, search, tracker, context, seconds
        self.ran = self.failures = 0
        self.last_error = ""
        # per-layer family lengths, from the dense layout (compressors may shrink it within a trial)
        self.layers: dict[str, int] = {}
        for compressor in plan.compressors if context else []:
            section = plan.config.space[compressor.name]
            self.layers[compressor.name] = compressor.per_layer_count(section, context.layout)
            summary = compressor.summary(section, context.layout)
            if summary:
                log.info(f"{compressor.name}: {summary}")

    def _timed(self, phase: str, action, *args):
        started = time.perf_counter()
        value = action(*args)
        self.seconds[phase].append(time.perf_counter() - started)
        return value

    def one_trial(self, done: int) -> bool:
        """Ask, run, record one trial; True if it completed. Failures are recorded, not raised."""
        trial, sample = self._timed("sampler", self.search.ask, self.plan.space, self.layers)
        baseline = (trial.user_attrs.get(BASELINE_ATTR) or {}).get("name")
        tags = {"autoprune.baseline": baseline} if baseline else {}
        run_id = self._timed("tracking", self.tracker.start_trial, trial.number, flatten(sample), tags)
        self._timed("sampler", trial.set_user_attr, RUN_ID_ATTR, run_id)
        self.ran += 1
        try:
            compressors = [c for c in self.plan.compressors if c.name in sample]  # a baseline runs prune alone
            result = run_trial(self.context, compressors, self.plan.scorers, sample)
        except KeyboardInterrupt:
            self.search.tell(trial, None)
            self.tracker.mark_killed(run_id)
            raise
        except Exception as error:  # a failed trial is recorded and the study goes on
            self.failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            self._timed("sampler", self.search.tell, trial, None)
            self._timed("tracking", self.tracker.end_trial, run_id, "FAIL", None, traceback.format_exc())
            log.warning(f"trial {trial.number:3d} failed: {self.last_error}  [{_summary(trial.params)}]")
            return False
        for phase, value in result.seconds.items():
            self.seconds[phase].append(value)
        layers = {key: value for key, value in result.info.items() if isinstance(value, list)}
        self._timed("sampler", self.search.tell, trial, result.values, layers)
        metrics = {**result.values, **_numeric_info(result.info)}
        metrics.update({f"seconds_{phase}": value for phase, value in result.seconds.items()})
        self._timed("tracking", self.tracker.end_trial, run_id, "COMPLETE", metrics, None, layers)
        values = " ".join(f"{name}={result.values[name]:.4g}" for name in self.plan.objectives)
        elapsed = result.seconds["compress"] + result.seconds["score"]
        label = f"baseline {baseline}" if baseline else _summary(trial.params)
        log.info(
            f"trial {trial.number:3d} [{done + 1}/{self.plan.config.search.n_trials}]  {values}  {label}  ({elapsed:.1f}s)"
        )
        return True


def _open_tracking(plan: Plan, search: OptunaSearch) -> StudyTracker:
    config = plan.config
    tracker = StudyTracker(config.mlflow.tracking_uri, config.mlflow.experiment, plan.study_name)
    tracker.start_study(
        OmegaConf.to_yaml(plan.resolved),
        plan.space.describe(),
        {
            "autoprune.version": __version__,
            "sampler": config.search.sampler,
            "n_trials": str(config.search.n_trials),
            "model": config.model.name,
            "objectives": ",".join(plan.objectives),
        },
    )
    for stale in search.fail_interrupted():
        if stale.user_attrs.get(RUN_ID_ATTR):
            tracker.mark_killed(stale.user_attrs[RUN_ID_ATTR])
        log.info(f"trial {stale.number} was interrupted by an earlier run; recorded as failed")
    return tracker


def _report(plan: Plan, rows: list[dict[str, Any]], front: list[int], parent_id: str) -> None:
    on_front = set(front)
    sign = 1 if plan.directions[0] == "minimize" else -1
    front_rows = sorted(
        (row for row in rows if row["trial"] in on_front), key=lambda row: sign * row[plan.objectives[0]]
    )
    if front_rows:
        extra = [
            key for key in front_rows[0] if key not in plan.objectives and key != "trial" and not _LAYER_KEY.search(key)
        ]
        table = format_table(front_rows, ["trial", *plan.objectives, *extra])
        log.info(f"\nPareto set ({len(front_rows)} of {len(rows)} completed trials):\n{table}\n")
    uri = plan.config.mlflow.tracking_uri
    log.info(
        f"mlflow: parent run {parent_id} '{plan.study_name}' in {uri}; browse with: mlflow ui --backend-store-uri {uri}"
    )


def run_study(resolved: DictConfig, registry: Registry | None = None) -> StudyResult:
    """Run (or resume) the study the config describes until it has `search.n_trials` completed trials."""
    plan = prepare(resolved, registry)
    config = plan.config
    seconds: dict[str, list[float]] = defaultdict(list)
    study_started = time.perf_counter()
    log.info(f"study {plan.study_name} (resume or extend it with study.name={plan.study_name})")

    search = OptunaSearch(config.search, plan.study_name, config.study.storage, plan.objectives, plan.directions)
    queued = search.enqueue_baselines(plan.baselines, config.search.n_trials)
    if queued:
        names = ", ".join(baseline.name for baseline in queued)
        log.info(f"baselines: {len(queued)} of {len(plan.baselines)} queued ahead of the sampler: {names}")
    done = search.count_complete()
    missing = config.search.n_trials - done
    # Load and calibrate before touching MLflow, so a bad model leaves no empty parent run behind.
    pending = search.waiting_baselines(plan.baselines)
    context = build_context(plan, seconds, pending) if missing > 0 else None
    if context is not None:
        prepare_compressors(plan, context, seconds, pending)
    started = time.perf_counter()
    tracker = _open_tracking(plan, search)
    seconds["tracking_once"].append(time.perf_counter() - started)

    run = _StudyRun(plan, search, tracker, context, seconds)
    max_failures = config.search.max_failures or config.search.n_trials
    if context is None:
        log.info(
            f"study {plan.study_name} already has {done} of {config.search.n_trials} completed trials; nothing to run"
        )
    else:
        arrows = " ".join(f"{o}{'↓' if d == 'minimize' else '↑'}" for o, d in zip(plan.objectives, plan.directions))
        log.info(
            f"search: {config.search.sampler}, {missing} trials to run ({done} of {config.search.n_trials} complete), objectives {arrows}"
        )
        try:
            while done < config.search.n_trials and run.failures < max_failures:
                done += run.one_trial(done)
        except KeyboardInterrupt:
            tracker.abort_study()
            raise AutopruneError(f"interrupted; resume with study.name={plan.study_name}") from None

    started = time.perf_counter()
    completed = search.completed()
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
    front = pareto_front({t.number: t.values for t in completed}, plan.directions)
    stopped = run.failures >= max_failures
    run_ids = {t.number: t.run_id for t in completed if t.run_id}
    layers = {t.number: t.layers for t in completed if t.layers}
    tracker.finish_study(
        rows, front, plan.objectives, plan.directions, run_ids, layers, status="FAILED" if stopped else "FINISHED"
    )
    seconds["tracking_once"].append(time.perf_counter() - started)
    seconds["total"].append(time.perf_counter() - study_started)
    _report(plan, rows, front, tracker.parent_id)
    if stopped:
        raise AutopruneError(
            f"stopped after {run.failures} failed trials (search.max_failures={max_failures}); last error: {run.last_error}"
        )
    return StudyResult(plan.study_name, tracker.parent_id, rows, front, run.ran, seconds)
