"""Which sampler finds the best front for the budget? Hypervolume of each sampler's Pareto front.

    python bench/bench_samplers.py [--trials 60] [--checkpoints 20 40 60] [--seeds 0 1 2]
                                   [--samplers tpe nsga2 nsga3 qmc random optuna-nsga2 optuna-nsga3]
                                   [--factor 3] [HYDRA OVERRIDES...]

The default pruning study (`space=prune`: metric x mean sparsity x one offset per block;
objectives perplexity and size_mb, `scorers=[perplexity,size]`) with no baselines
(`baselines.allocations=[]`), so each sampler starts from nothing. Each sampler runs
`--trials` trials for each seed, its study configured as the CLI would configure it
(`search.sampler`, `search.seed`, `search.n_trials=--trials`, so a genetic population is
sized for that budget); `optuna-nsga2` and `optuna-nsga3` are Optuna's own samplers with
their defaults and the same population, which lost to random search before autoprune set the
genetic samplers up (`autoprune/samplers.py`). The table gives the hypervolume of the front of its first 20, 40
and 60 completed trials: the mean over the seeds, then each seed's.

Every hypervolume is measured from one fixed reference point, from numbers no sampler
chooses: `--factor` x the dense model's perplexity and the dense model's size_mb. So every
cell is comparable with every other, and a trial counts only if its perplexity is within that
factor of dense and it is smaller than dense.

Cheap enough for 2 cores: the evaluation uses 16 windows and the calibration 32
(`data.eval_windows=16 data.calib_windows=32`; a trial takes about a second), the context
(model, windows, calibration statistics) is built once for all studies, and the studies are
in-memory Optuna studies driven by ask and tell, without MLflow. Each trial runs as a study
runs it (`SearchSpace.sample`, then `autoprune.trial.run_trial`), baselines included when
the overrides turn them on.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

SAMPLERS = ("tpe", "nsga2", "nsga3", "qmc", "random", "optuna-nsga2", "optuna-nsga3")
PLAIN = {"optuna-nsga2": optuna.samplers.NSGAIISampler, "optuna-nsga3": optuna.samplers.NSGAIIISampler}
SETTINGS = [
    "space=prune",
    "scorers=[perplexity,size]",
    "baselines.allocations=[]",
    "data.eval_windows=16",
    "data.calib_windows=32",
]


@dataclass
class Bench:
    """What every study of the bench shares: the plan, the built context, the reference point."""

    plan: Any
    context: Any
    layers: dict[str, int]
    reference: list[float]
    dense: dict[str, float]

    def run(self, sampler: optuna.samplers.BaseSampler, n_trials: int) -> list[list[float]]:
        """The objective values of `n_trials` completed trials of an in-memory study (baselines first)."""
        from autoprune.search import BASELINE_ATTR
        from autoprune.trial import run_trial

        plan = self.plan
        study = optuna.create_study(directions=plan.directions, sampler=sampler)
        for baseline in plan.baselines[:n_trials]:
            attrs = {"name": baseline.name, "overrides": baseline.overrides, "params": baseline.params, "attempt": 1}
            study.enqueue_trial(baseline.params, user_attrs={BASELINE_ATTR: attrs})
        values: list[list[float]] = []
        while len(values) < n_trials:
            trial = study.ask()
            baseline = trial.user_attrs.get(BASELINE_ATTR)
            sample = plan.space.sample(trial, self.layers, baseline["overrides"] if baseline else None)
            compressors = [c for c in plan.compressors if c.name in sample]
            result = run_trial(self.context, compressors, plan.scorers, sample).values
            values.append([result[name] for name in plan.objectives])
            study.tell(trial, values[-1])
        return values

    def curve(self, values: Sequence[Sequence[float]], checkpoints: Sequence[int]) -> list[float]:
        """The hypervolume of the front of the first n trials, for each checkpoint n."""
        from autoprune.pareto import hypervolume, pareto_front

        directions = self.plan.directions
        curve = []
        for n in checkpoints:
            complete = dict(enumerate(values[:n]))
            front = [complete[i] for i in pareto_front(complete, directions)]
            curve.append(hypervolume(front, self.reference, directions))
        return curve


def build_bench(settings: Sequence[str], factor: float) -> Bench:
    """The plan and context of the bench's studies, built once, and the fixed reference point."""
    from autoprune.builder import build_context, prepare_components
    from autoprune.config import compose_config
    from autoprune.plan import prepare
    from autoprune.trial import run_trial

    plan = prepare(compose_config(settings))
    if plan.objectives != ["perplexity", "size_mb"]:
        raise SystemExit(f"the reference point is set for perplexity and size_mb, not {plan.objectives}")
    context = build_context(plan, defaultdict(list), plan.baselines)
    prepare_components(plan, context, defaultdict(list), plan.baselines)
    layers = {c.name: c.per_layer_count(plan.config.space[c.name], context.layout) for c in plan.compressors}
    dense = run_trial(context, [], plan.scorers, {}).values
    return Bench(plan, context, layers, [dense["perplexity"] * factor, dense["size_mb"]], dense)


def sampler_factories(settings: Sequence[str], samplers: Sequence[str], seeds: Sequence[int]) -> dict[tuple, Callable]:
    """Each (sampler, seed)'s sampler as `autoprune` builds it, every config checked before the first trial."""
    from autoprune.config import compose_config
    from autoprune.plan import prepare
    from autoprune.samplers import build_sampler, population_size

    factories = {}
    for sampler in samplers:
        for seed in seeds:
            if sampler in PLAIN:  # Optuna's defaults, the population autoprune would size
                size = population_size(compose_config(list(settings)).search.n_trials)
                factories[sampler, seed] = lambda plain=PLAIN[sampler], seed=seed, size=size: plain(
                    seed=seed, population_size=size
                )
                continue
            plan = prepare(compose_config([*settings, f"search.sampler={sampler}", f"search.seed={seed}"]))
            search, n_objectives = plan.config.search, len(plan.objectives)
            factories[sampler, seed] = lambda search=search, seed=seed, n=n_objectives: build_sampler(search, seed, n)
    return factories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[20, 40, 60])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument("--factor", type=float, default=3.0, help="reference perplexity = factor x dense")
    args, overrides = parser.parse_known_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna's NSGA-III

    settings = [*SETTINGS, f"search.n_trials={args.trials}", *overrides]
    factories = sampler_factories(settings, args.samplers, args.seeds)
    bench = build_bench(settings, args.factor)
    checkpoints = [n for n in args.checkpoints if n <= args.trials]
    print(
        f"{sum(bench.layers.values())} per-layer parameters; {len(bench.context.evaluation)} evaluation and "
        f"{len(bench.context.calibration)} calibration windows; {len(bench.plan.baselines)} baselines; "
        f"{args.trials} trials per study, seeds {args.seeds}"
    )
    print(
        f"dense: perplexity {bench.dense['perplexity']:.2f}, size {bench.dense['size_mb']:.3f} MB; reference point: "
        f"perplexity {bench.reference[0]:.2f} ({args.factor:g} x dense), size {bench.reference[1]:.3f} MB (dense)"
    )
    hv = " ".join(f"{f'hv@{n}':>8}" for n in checkpoints)
    print(f"{'sampler':<12} {hv}   per seed ({', '.join(f'hv@{n}' for n in checkpoints)})")
    for sampler in args.samplers:
        started = time.perf_counter()
        curves = [bench.curve(bench.run(factories[sampler, seed](), args.trials), checkpoints) for seed in args.seeds]
        means = " ".join(f"{statistics.mean(curve[i] for curve in curves):>8.1f}" for i in range(len(checkpoints)))
        per_seed = " | ".join(" ".join(f"{value:.0f}" for value in curve) for curve in curves)
        print(f"{sampler:<12} {means}   {per_seed}  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
