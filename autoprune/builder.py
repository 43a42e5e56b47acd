"""Building a study's context: load the model and data, collect the calibration statistics and let
the compressors prepare on the dense model — once per study (or per worker process).

The same steps give export and `api.reproduce` their model: `build_context`, then `apply_sample`,
which prepares the compressors as the study did and compresses with one trial's sample for good.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoprune.calibration import collect_stats
from autoprune.config import CalibrationConfig
from autoprune.context import Serving, StudyContext
from autoprune.data import calibration_set, evaluation_windows, read_text, tokenize
from autoprune.journal import Journal
from autoprune.model import decoder_layout, load_model, model_context
from autoprune.plan import Plan, check_serving
from autoprune.search import Baseline
from autoprune.stats_store import StatsStore, default_cache_dir, stats_key
from autoprune.trial import compress

log = logging.getLogger("autoprune")


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
    maximum = model_context(model, None)
    check_serving(config.serving, maximum)  # again: a hub model's config.json may not have been at hand
    serving = Serving(config.serving.context_length or maximum, config.serving.batch_size)
    return StudyContext(
        model,
        tokenizer,
        layout,
        calibration,
        evaluation,
        stats,
        plan.registry,
        settings.mode,
        settings.batch_size,
        serving=serving,
    )


def prepare_components(
    plan: Plan, context: StudyContext, seconds: dict[str, list[float]], baselines: Sequence[Baseline] = ()
) -> dict[str, float]:
    """Let each compressor compute on the dense model, once, what its trials (and the baselines') share,
    then each scorer measure what trials are compared with; returns the scorers' dense figures."""
    started = time.perf_counter()
    prepare_compressors(plan, context, baselines)
    dense: dict[str, float] = {}
    for scorer in plan.scorers:
        figures = scorer.prepare(context)
        dense.update({f"dense.{name}": float(value) for name, value in figures.items()})
    if dense:
        log.info(
            "dense model: " + " ".join(f"{name.removeprefix('dense.')}={value:.4g}" for name, value in dense.items())
        )
    seconds["prepare"].append(time.perf_counter() - started)
    return dense


def prepare_compressors(plan: Plan, context: StudyContext, baselines: Sequence[Baseline] = ()) -> None:
    """Let each compressor compute on the dense model what the space's trials and the `baselines`
    share (block influence, outlier scores, ...)."""
    space = plan.config.space
    for compressor in plan.compressors:
        compressor.prepare(context, space[compressor.name])
        for baseline in baselines:
            if compressor.name in baseline.overrides:
                compressor.prepare(context, {**space[compressor.name], **baseline.overrides[compressor.name]})


def apply_sample(
    plan: Plan,
    context: StudyContext,
    sample: Mapping[str, Mapping[str, Any]],
    baselines: Sequence[Baseline] = (),
) -> dict[str, Any]:
    """Compress the dense `context` with one trial's `sample` for good, the compressors prepared as
    the study prepared them (`baselines`: the trial's own, when it is one); nothing is restored.
    Returns what the compressors report."""
    prepare_compressors(plan, context, baselines)
    compressors = [c for c in plan.compressors if c.name in sample]  # a baseline runs its own compressor alone
    return compress(context, compressors, sample, Journal())


def _baseline_allocations(baselines: Sequence[Baseline]) -> set[str]:
    """The allocations the prune baselines use (a baseline of another compressor prunes nothing)."""
    return {b.overrides["prune"].get("allocation", "uniform") for b in baselines if "prune" in b.overrides}


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
