"""Multi-fidelity on the embedded model: what stopping dominated trials early buys at equal wall time.

    python bench/bench_fidelity.py [--seconds 150] [--seeds 0 1] [HYDRA OVERRIDES...]

Runs the pruning space (`space=prune`: metric x mean sparsity x per-block offsets, objectives
perplexity and size, no baselines) with the study's TPE sampler for `--seconds` of wall time per
seed, once with the multi-fidelity gate (`autoprune.fidelity`: KL stage, then a quarter and half
of the evaluation windows) and once measuring every trial in full, the two runs of a seed
interleaved so that the machine's load falls on both. Prints, per mode and seed: trials completed
(and how many of them are on the front: a trial the gate could stop is one several dominate),
trials stopped early, and the hypervolume of the completed front, measured from one fixed reference
point (twice the dense perplexity, the dense size), with the ratio on / off.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import optuna


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args, overrides = parser.parse_known_args()

    from autoprune.builder import build_context, prepare_components
    from autoprune.config import compose_config
    from autoprune.fidelity import STAGES_ATTR, Gate, Measured, TrialStopped
    from autoprune.pareto import hypervolume, pareto_front
    from autoprune.plan import prepare
    from autoprune.samplers import build_sampler
    from autoprune.trial import run_trial

    plan = prepare(compose_config(["space=prune", "scorers=[perplexity,size]", "baselines.allocations=[]", *overrides]))
    seconds: dict[str, list[float]] = defaultdict(list)
    context = build_context(plan, seconds)
    prepare_components(plan, context, seconds)  # the dense model's log-probs the KL stage compares with
    objectives, directions = plan.objectives, plan.directions
    layers = {c.name: c.per_layer_count(plan.config.space[c.name], context.layout) for c in plan.compressors}
    dense_values = run_trial(context, [], plan.scorers, {}).values
    reference = [2 * dense_values["perplexity"], dense_values["size_mb"]]
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def search(seed: int, staged: bool) -> dict[str, float]:
        study = optuna.create_study(
            directions=directions, sampler=build_sampler(plan.config.search, seed, len(objectives))
        )
        completed: list[Measured] = []
        stopped = 0
        started = time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            trial = study.ask()
            sample = plan.space.sample(trial, layers)
            gate = Gate(dict(zip(objectives, directions)), completed) if staged else None
            try:
                result = run_trial(context, plan.compressors, plan.scorers, sample, gate)
            except TrialStopped as stop:
                trial.set_user_attr(STAGES_ATTR, stop.stages)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                stopped += 1
                continue
            completed.append(Measured(result.values, result.stages))
            study.tell(trial, [result.values[name] for name in objectives])
        points = {t.number: list(t.values) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
        front = [points[n] for n in pareto_front(points, directions)]
        return {
            "completed": len(points),
            "stopped": stopped,
            "on_front": len(front),
            "hypervolume": hypervolume(front, reference, directions),
        }

    print(
        f"embedded model, space=prune, {len(context.evaluation)} evaluation windows, {args.seconds:.0f} s per run; "
        f"dense perplexity {dense_values['perplexity']:.2f}, size {dense_values['size_mb']:.2f} MB; "
        f"reference point {reference[0]:.1f}, {reference[1]:.2f}"
    )
    rows = defaultdict(list)
    for seed in args.seeds:
        for staged in (seed % 2 == 0, seed % 2 == 1):  # alternate which mode runs first
            figures = search(seed, staged)
            rows["on" if staged else "off"].append(figures)
            print(
                f"seed {seed} fidelity {'on ' if staged else 'off'}: {figures['completed']:3d} completed "
                f"({figures['on_front']} on the front), {figures['stopped']:3d} stopped early, "
                f"hypervolume {figures['hypervolume']:.3f}"
            )
    mean = {mode: {k: statistics.mean(r[k] for r in runs) for k in runs[0]} for mode, runs in rows.items()}
    print(
        "\nmean over seeds      completed  on front  stopped  hypervolume\n"
        + "\n".join(
            f"fidelity {mode:3s}        {m['completed']:9.1f}  {m['on_front']:8.1f}  {m['stopped']:7.1f}  "
            f"{m['hypervolume']:11.3f}"
            for mode, m in mean.items()
        )
        + f"\non / off                {mean['on']['completed'] / mean['off']['completed']:.2f}"
        f"                     {mean['on']['hypervolume'] / mean['off']['hypervolume']:.3f}"
    )


if __name__ == "__main__":
    main()
