"""Layerwise allocation on the embedded model: does a searched allocation beat the hand-made ones?

    python bench/bench_allocation.py [--trials 100] [--offset 0.3] [--granularity block|linear]
                                     [--sparsities 0.6 0.7] [HYDRA OVERRIDES...]

With Wanda at each mean sparsity, prints the perplexity of the uniform allocation, of OWL, and
of the best of `--trials` TPE trials of the `searched` allocation (offsets per unit in
[-offset, offset], renormalised to the same mean; uniform and OWL enqueued first, as every
study does), then OWL / uniform and best-searched / uniform (goal: best-searched <= 0.9 x
uniform at 0.7). The search scores perplexity on the even evaluation windows and the table
reports the odd ones, so the best trial is not judged on the windows it was picked on. Then
the perplexity of the dense model with k = 1, 2 blocks removed by block influence, with and
without the magnitude compensation, on the same reported windows.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict

import optuna


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--offset", type=float, default=0.3, help="searched offsets lie in [-offset, offset]")
    parser.add_argument("--granularity", choices=["block", "linear"], default="block")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.6, 0.7])
    args, overrides = parser.parse_known_args()

    from autoprune.builder import build_context
    from autoprune.config import compose_config
    from autoprune.plan import prepare
    from autoprune.trial import run_trial

    context = build_context(
        prepare(compose_config(["space.prune.metric.choices=[wanda]", *overrides])), defaultdict(list)
    )
    search_windows, report_windows = context.evaluation[0::2], context.evaluation[1::2]
    searching = dataclasses.replace(context, evaluation=search_windows)
    reporting = dataclasses.replace(context, evaluation=report_windows)
    registry = context.registry
    prune, remove, scorer = (
        registry.compressor("prune"),
        registry.compressor("remove_layers"),
        registry.scorer("perplexity"),
    )
    units = context.layout.units(args.granularity)

    def perplexity(where, section) -> float:
        return run_trial(where, [prune], [scorer], {"prune": section}).values["perplexity"]

    print(
        f"embedded model, {len(units)} allocation units ({args.granularity}); search on {len(search_windows)} windows, report on {len(report_windows)}"
    )
    print(f"dense perplexity: {scorer.score(reporting)['perplexity']:.2f}")
    print(
        f"{'sparsity':>8} {'uniform':>9} {'owl':>9} {'searched':>9}   owl/uniform  searched/uniform  ({args.trials} TPE trials)"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for target in args.sparsities:
        started = time.perf_counter()
        base = {"metric": "wanda", "sparsity": target, "granularity": args.granularity}
        uniform = perplexity(reporting, {**base, "allocation": "uniform"})
        owl = perplexity(reporting, {**base, "allocation": "owl"})
        owl_ratios = registry.allocation("owl").ratios(target, units, context, {})

        def objective(trial: optuna.Trial, base: dict = base) -> float:
            offsets = [trial.suggest_float(f"offset.{i}", -args.offset, args.offset) for i in range(len(units))]
            return perplexity(searching, {**base, "allocation": "searched", "offsets": offsets})

        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, multivariate=True))
        study.enqueue_trial({f"offset.{i}": 0.0 for i in range(len(units))})  # uniform
        study.enqueue_trial({f"offset.{i}": r - target for i, r in enumerate(owl_ratios)})  # OWL, exactly
        study.optimize(objective, n_trials=args.trials)
        best = [study.best_params[f"offset.{i}"] for i in range(len(units))]
        searched = perplexity(reporting, {**base, "allocation": "searched", "offsets": best})
        print(
            f"{target:>8.1f} {uniform:>9.2f} {owl:>9.2f} {searched:>9.2f}   {owl / uniform:>11.3f}  {searched / uniform:>16.3f}"
            f"  ({time.perf_counter() - started:.0f} s; best is trial {study.best_trial.number})"
        )
        ratios = registry.allocation("searched").ratios(target, units, context, {"offsets": best})
        print(f"{'':>8} best-searched ratios per unit: {' '.join(f'{r:.2f}' for r in ratios)}")
        print(f"{'':>8} OWL ratios per unit:           {' '.join(f'{r:.2f}' for r in owl_ratios)}")

    remove.prepare(context, {"count": {"low": 1, "high": 2}})
    print("\nlayers removed by block influence (no pruning):")
    print(f"{'k':>3} {'plain':>9} {'compensated':>12}")
    for count in (1, 2):
        values = [
            run_trial(
                reporting, [remove], [scorer], {"remove_layers": {"count": count, "compensate": compensate}}
            ).values["perplexity"]
            for compensate in (False, True)
        ]
        print(f"{count:>3} {values[0]:>9.2f} {values[1]:>12.2f}")
    profile = context.cache["remove_layers.profile"]
    print(f"block influence: {' '.join(f'{b:.3f}' for b in profile.influence)}")
    print(f"magnitude gap:   {' '.join(f'{g:.3f}' for g in profile.gap)}")


if __name__ == "__main__":
    main()
