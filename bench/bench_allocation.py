"""Layerwise allocation on the embedded model: does a searched allocation beat the hand-made ones?

    python bench/bench_allocation.py [--trials 100] [--offset 0.3] [--granularity block|linear]
                                     [--sparsities 0.6 0.7] [--fidelity-at 0.7] [HYDRA OVERRIDES...]

With Wanda at each mean sparsity, prints the perplexity of the uniform allocation, of OWL, and
of the best of `--trials` TPE trials of the `searched` allocation (offsets per unit in
[-offset, offset], renormalised to the same mean; uniform and OWL enqueued first, as every
study does), then OWL / uniform and best-searched / uniform (goal: best-searched <= 0.9 x
uniform at 0.7). The search scores perplexity on the even evaluation windows and the table
reports the odd ones, so the best trial is not judged on the windows it was picked on. At the
sparsities `--fidelity-at`, the same search runs again with the multi-fidelity gate
(`autoprune.fidelity`: the KL stage, then a quarter and half of the search windows; a trial that
3 completed trials beat at a stage stops there) for the wall time the full trials took, and the
row gives its trials completed and stopped and its best-searched / uniform. Then
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
    parser.add_argument("--fidelity-at", type=float, nargs="*", default=[0.7], help="sparsities searched again, staged")
    args, overrides = parser.parse_known_args()

    from autoprune.builder import build_context
    from autoprune.config import compose_config
    from autoprune.fidelity import Gate, Measured, TrialStopped
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

    scorer.prepare(searching)  # the dense log-probs the KL stage compares with

    def perplexity(where, section) -> float:
        return run_trial(where, [prune], [scorer], {"prune": section}).values["perplexity"]

    def staged_search(base: dict, owl_ratios: list[float], seconds: float) -> tuple[optuna.Study, int]:
        """TPE over the offsets for `seconds` of wall time, each trial stopped by the gate when 3
        completed trials beat it at a cheap stage; returns the study and the trials stopped."""
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, multivariate=True))
        study.enqueue_trial({f"offset.{i}": 0.0 for i in range(len(units))})
        study.enqueue_trial({f"offset.{i}": r - base["sparsity"] for i, r in enumerate(owl_ratios)})
        completed: list[Measured] = []
        stopped, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            trial = study.ask()
            offsets = [trial.suggest_float(f"offset.{i}", -args.offset, args.offset) for i in range(len(units))]
            section = {**base, "allocation": "searched", "offsets": offsets}
            gate = Gate({"perplexity": "minimize"}, completed)
            try:
                result = run_trial(searching, [prune], [scorer], {"prune": section}, gate)
            except TrialStopped:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                stopped += 1
                continue
            completed.append(Measured(result.values, result.stages))
            study.tell(trial, result.values["perplexity"])
        return study, stopped

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
        full_seconds = time.perf_counter() - started
        best = [study.best_params[f"offset.{i}"] for i in range(len(units))]
        searched = perplexity(reporting, {**base, "allocation": "searched", "offsets": best})
        print(
            f"{target:>8.1f} {uniform:>9.2f} {owl:>9.2f} {searched:>9.2f}   {owl / uniform:>11.3f}  {searched / uniform:>16.3f}"
            f"  ({full_seconds:.0f} s; best is trial {study.best_trial.number})"
        )
        if target in args.fidelity_at:
            staged, stopped = staged_search(base, owl_ratios, full_seconds)
            best_staged = [staged.best_params[f"offset.{i}"] for i in range(len(units))]
            found = perplexity(reporting, {**base, "allocation": "searched", "offsets": best_staged})
            done = len(staged.trials) - stopped
            print(
                f"{'':>8} {'':>9} {'':>9} {found:>9.2f}   {'':>11}  {found / uniform:>16.3f}  (multi-fidelity, same "
                f"{full_seconds:.0f} s: {done} completed, {stopped} stopped early; best is trial {staged.best_trial.number})"
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
