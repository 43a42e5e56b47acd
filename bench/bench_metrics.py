"""Every pruning metric on the embedded model, side by side in one run.

    python bench/bench_metrics.py [HYDRA OVERRIDES...]

Prints the dense perplexity, then for each metric the perplexity at 50 % and 70 % uniform
unstructured sparsity and at 2:4, and the median time of its prune step (all linears of the
model, calibration statistics already collected once for the study). Then the cost of one
trial (prune + score) in dense-once and in sequential calibration mode, and their ratio.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from collections import defaultdict

METRICS = ["magnitude", "wanda", "ria", "stade", "meta", "sparsegpt", "ace_cos", "ace_var", "ace"]
SETTINGS = [("50%", {"sparsity": 0.5}), ("70%", {"sparsity": 0.7}), ("2:4", {"sparsity": 0.0, "pattern": "2:4"})]


def main(overrides: list[str]) -> None:
    from autoprune.builder import build_context
    from autoprune.config import compose_config
    from autoprune.plan import prepare
    from autoprune.trial import run_trial
    from autoprune_plugins.scorers.perplexity import perplexity

    config = compose_config([f"space.prune.metric.choices=[{','.join(METRICS)}]", *overrides])
    plan = prepare(config)
    context = build_context(plan, defaultdict(list))
    prune, scorer = context.registry.compressor("prune"), context.registry.scorer("perplexity")
    print(f"dense perplexity: {perplexity(context.model, context.evaluation):.2f}")
    print(f"{'metric':<10}" + "".join(f"{label:>10}" for label, _ in SETTINGS) + f"{'prune step':>14}")
    for metric in METRICS:
        values, seconds = [], []
        for _, setting in SETTINGS:
            result = run_trial(context, [prune], [scorer], {"prune": {"metric": metric, **setting}})
            seconds.append(result.seconds["compress"])
            values.append(result.values["perplexity"])
        print(f"{metric:<10}" + "".join(f"{v:>10.2f}" for v in values) + f"{statistics.median(seconds):>12.3f} s")

    print("\none trial (wanda, 50 %), median of 3:")
    trial_seconds = {}
    for mode in ("dense-once", "sequential"):
        mode_context = dataclasses.replace(context, calibration_mode=mode)
        runs = [
            run_trial(mode_context, [prune], [scorer], {"prune": {"metric": "wanda", "sparsity": 0.5}})
            for _ in range(3)
        ]
        trial_seconds[mode] = statistics.median(r.seconds["compress"] + r.seconds["score"] for r in runs)
        print(f"  {mode:<11} {trial_seconds[mode]:.3f} s   perplexity {runs[0].values['perplexity']:.2f}")
    print(f"  sequential / dense-once: {trial_seconds['sequential'] / trial_seconds['dense-once']:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
