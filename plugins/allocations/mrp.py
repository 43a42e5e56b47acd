"""MRP, maximum redundancy pruning: prune most where the scores show the least structure.

A unit's redundancy at sparsity r is the non-outlier ratio of the scores it still keeps: the
fraction of its highest (1 − r) Wanda scores that are at most M times their mean. Starting
from zero, MRP repeatedly raises by one step the sparsity of the most redundant unit and
re-measures that unit, until the size-weighted mean reaches the target; a final common shift
(smaller than one step) makes the mean exact. Pruning a unit removes its weakest scores, so
its redundancy falls as it is pruned, which spreads the sparsity out.

The scores are the dense model's, computed once per study (a fixed sample of 2^20 per unit on
large models). Space parameters: `mrp_m` (M, default 5), `mrp_step` (default 0.01).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from autoprune.plugin import (
    Allocation,
    AllocationUnit,
    ConfigError,
    StudyContext,
    hookimpl,
    is_number,
    possible_values,
)
from autoprune_plugins.allocations.exact_mean import MAX_RATIO, renormalise
from autoprune_plugins.allocations.outliers import sorted_scores

M = 5.0
STEP = 0.01


def redundancy(scores: Tensor, prefix: Tensor, ratio: float, m: float) -> float:
    """Non-outlier ratio of the scores kept at `ratio` (`scores` ascending, `prefix` their cumulative sums)."""
    first = int(ratio * scores.numel())
    kept = scores.numel() - first
    if kept <= 0:
        return 0.0
    mean = (float(prefix[-1]) - (float(prefix[first - 1]) if first else 0.0)) / kept
    below = int(torch.searchsorted(scores, m * mean, right=True))
    return (below - first) / kept


class MRP(Allocation):
    name = "mrp"
    needs = frozenset({"sum_sq"})
    params = ("mrp_m", "mrp_step")

    def check(self, space: Mapping[str, Any]) -> None:
        for m in possible_values(space.get("mrp_m", M)):
            if not is_number(m) or m <= 0:
                raise ConfigError(f"space.prune.mrp_m must be a positive number, got {m!r}")
        for step in possible_values(space.get("mrp_step", STEP)):
            if not is_number(step) or not 0 < step <= 0.1:
                raise ConfigError(f"space.prune.mrp_step must be in (0, 0.1], got {step!r}")

    def prepare(self, context: StudyContext, units: Sequence[AllocationUnit], space: Mapping[str, Any]) -> None:
        for unit in units:
            sorted_scores(context, unit)

    def ratios(
        self, target: float, units: Sequence[AllocationUnit], context: StudyContext, params: Mapping[str, Any]
    ) -> list[float]:
        m, step = float(params.get("mrp_m", M)), float(params.get("mrp_step", STEP))
        sizes = [unit.size for unit in units]
        scores = [sorted_scores(context, unit) for unit in units]
        prefixes = [s.cumsum(0) for s in scores]
        ratios = [0.0] * len(units)
        current = [redundancy(s, p, 0.0, m) for s, p in zip(scores, prefixes)]
        pruned, goal = 0.0, target * sum(sizes)  # pruned weights so far, and the count the mean asks for
        while pruned < goal:
            open_units = [i for i, r in enumerate(ratios) if r < MAX_RATIO]
            if not open_units:  # every unit at the maximum: the mean is as high as it gets
                break
            chosen = max(open_units, key=lambda i: current[i])
            raised = min(ratios[chosen] + step, MAX_RATIO)
            pruned += (raised - ratios[chosen]) * sizes[chosen]
            ratios[chosen] = raised
            current[chosen] = redundancy(scores[chosen], prefixes[chosen], ratios[chosen], m)
        return renormalise(float(target), [r - target for r in ratios], sizes)


@hookimpl
def register_allocations() -> list[Allocation]:
    return [MRP()]
