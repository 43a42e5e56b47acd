"""Outliers among a unit's Wanda scores, the signal OWL and MRP allocate by.

An outlier is a score above m times the mean score of its unit (all the unit's linears
together, as in OWL's reference). Computed on the dense model's weights and statistics and
cached for the study: the allocations' `prepare` fills the cache before the first trial, while
the model is dense (a compressor running before prune may change weights within a trial).
"""

from __future__ import annotations

import torch
from torch import Tensor

from autoprune.plugin import AllocationUnit, LinearStats, StudyContext
from autoprune_plugins.metrics.wanda import Wanda

SAMPLE = 1 << 20  # scores kept per unit for MRP's sorted distribution


def _scores(unit: AllocationUnit, stats: dict[str, LinearStats]) -> list[Tensor]:
    return [Wanda().score(linear.weight, stats[name]).reshape(-1) for name, linear in unit.linears.items()]


def outlier_fraction(context: StudyContext, unit: AllocationUnit, m: float) -> float:
    """The fraction of the unit's Wanda scores above m · their mean."""
    cache = context.cache.setdefault("allocations.outlier_fraction", {})
    key = (unit.label, m)
    if key not in cache:
        scores = _scores(unit, context.stats)
        count = sum(s.numel() for s in scores)
        mean = sum(float(s.sum(dtype=torch.float64)) for s in scores) / count
        cache[key] = sum(int((s > m * mean).sum()) for s in scores) / count
    return cache[key]


def sorted_scores(context: StudyContext, unit: AllocationUnit) -> Tensor:
    """The unit's Wanda scores in ascending order (float64), a fixed random sample of SAMPLE when larger."""
    cache = context.cache.setdefault("allocations.sorted_scores", {})
    if unit.label not in cache:
        scores = torch.cat([s.cpu() for s in _scores(unit, context.stats)])
        if scores.numel() > SAMPLE:
            generator = torch.Generator().manual_seed(0)
            scores = scores[torch.randint(scores.numel(), (SAMPLE,), generator=generator)]
        cache[unit.label] = scores.double().sort().values
    return cache[unit.label]
