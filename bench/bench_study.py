"""Where the time of the default study goes, measured in one run.

    python bench/bench_study.py [HYDRA OVERRIDES...]

Runs the default study (or the one the overrides describe) with fresh Optuna and MLflow
stores and an empty statistics cache in a temporary directory and prints: total wall time, the one-off calibration time,
the median prune (compress) and scoring time per trial, and the orchestration overhead
(sampler + MLflow + restore) as a share of the wall time. Goal: overhead under 5 %.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time


def main(overrides: list[str]) -> None:
    started = time.perf_counter()
    from autoprune.config import compose_config
    from autoprune.study import run_study

    imports = time.perf_counter() - started
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as workdir:
        config = compose_config(
            [
                f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow.db",
                f"study.storage=sqlite:///{workdir}/optuna.db",
                f"calibration.cache_dir={workdir}/stats",  # measure the collection, not a cache hit
                "study.name=bench",
                *overrides,
            ]
        )
        result = run_study(config)
    seconds = result.seconds
    wall = seconds["total"][0]
    overhead = {phase: sum(seconds[phase]) for phase in ("sampler", "tracking", "tracking_once", "restore")}
    per_trial_ms = {phase: 1000 * overhead[phase] / max(1, result.ran) for phase in ("sampler", "tracking", "restore")}
    rows = [
        ("trials run", f"{result.ran}"),
        ("imports (before the study)", f"{imports:.2f} s"),
        ("study wall time", f"{wall:.2f} s"),
        ("  model load", f"{sum(seconds['load']):.2f} s"),
        ("  data (text + tokenize)", f"{sum(seconds['data']):.2f} s"),
        ("  calibration statistics (once)", f"{sum(seconds['calibration']):.2f} s"),
        ("  prepare: dense-model scores (once)", f"{sum(seconds['prepare']):.2f} s"),
        ("  median prune time / trial", f"{statistics.median(seconds['compress']):.3f} s"),
        ("  median scoring time / trial", f"{statistics.median(seconds['score']):.3f} s"),
        (
            "  sampler + study lock (claim + tell)",
            f"{overhead['sampler']:.2f} s  ({per_trial_ms['sampler']:.0f} ms / trial)",
        ),
        ("  MLflow per trial", f"{overhead['tracking']:.2f} s  ({per_trial_ms['tracking']:.0f} ms / trial)"),
        ("  MLflow once (store, parent, Pareto)", f"{overhead['tracking_once']:.2f} s"),
        ("  restore", f"{overhead['restore']:.2f} s  ({per_trial_ms['restore']:.0f} ms / trial)"),
        ("orchestration overhead / wall", f"{100 * sum(overhead.values()) / wall:.1f} %  (goal < 5 %)"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main(sys.argv[1:])
