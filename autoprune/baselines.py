"""The hand-made allocations every new study evaluates first, so its Pareto front can never be
worse than them: each configured allocation (uniform, OWL) with each metric the space offers,
at each configured target sparsity, unstructured.

A baseline fixes the prune section's `metric`, `sparsity`, `allocation` and `pattern`, and runs
the prune compressor alone (no layer removal or other compressor in a baseline trial). Values of
sampled parameters are enqueued in Optuna (so the sampler learns from the baseline like from
any trial); values of constants are overrides applied to the trial's sample. Parameters whose
`when` no longer holds (the `offsets` of the searched allocation) are then not sampled at all.
"""

from __future__ import annotations

import logging
from typing import Any

from autoprune.config import BaselinesConfig
from autoprune.search import Baseline
from autoprune.space import Parameter, SearchSpace

log = logging.getLogger("autoprune")

COMPRESSOR = "prune"


def _options(parameter: Parameter | None, default: Any) -> list[Any]:
    if parameter is None:
        return [default]
    if parameter.kind == "constant":
        return [parameter.value]
    return list(parameter.choices)


def _admits(parameter: Parameter, value: Any) -> bool:
    if parameter.kind == "categorical":
        return value in parameter.choices
    return parameter.low <= value <= parameter.high


def build_baselines(space: SearchSpace, settings: BaselinesConfig) -> list[Baseline]:
    if COMPRESSOR not in space.sections or not settings.allocations:
        return []
    section = space.section(COMPRESSOR)
    pattern = section.get("pattern")
    if pattern is not None and "unstructured" not in _options(pattern, None):
        log.info("baselines: none, the space prunes only N:M patterns, where the allocation does not apply")
        return []
    sparsity = section["sparsity"]
    sparsities = [sparsity.value] if sparsity.kind == "constant" else list(settings.sparsities)
    baselines = []
    for target in sparsities:
        for allocation in settings.allocations:
            for metric in _options(section.get("metric"), None):
                fixed = {"metric": metric, "sparsity": target, "allocation": allocation, "pattern": "unstructured"}
                params, overrides, admitted = {}, {}, True
                for name, value in fixed.items():
                    parameter = section.get(name)
                    if parameter is None or parameter.kind == "constant":
                        overrides[name] = value
                    elif _admits(parameter, value):
                        params[parameter.key] = value
                    else:
                        admitted = False
                label = f"{allocation} {metric} {target:g}"
                if admitted:
                    baselines.append(Baseline(label, params, {COMPRESSOR: overrides}))
                else:
                    log.info(f"baselines: skipping {label}, outside the search space")
    return baselines
