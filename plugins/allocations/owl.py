"""OWL, outlier-weighted layerwise sparsity (Yin et al., 2024): more outliers, less pruning.

Each unit's outlier ratio D_l is the fraction of its Wanda scores above M · their mean. The
ratios are min-max scaled to [0, 2λ], centred, and subtracted from the target:

    sparsity_l = s − (scaled_l − mean(scaled)),   scaled_l = 2λ (D_l − min D) / (max D − min D)

so the ratios span 2λ around s. With units of equal size (decoder blocks) that mean is already
exact; otherwise (per-linear units) a common shift restores the size-weighted mean exactly.
Space parameters: `owl_m` (M, default 5) and `owl_lambda` (λ, default 0.08).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from autoprune.plugin import (
    Allocation,
    AllocationUnit,
    ConfigError,
    StudyContext,
    hookimpl,
    is_number,
    possible_values,
)
from autoprune_plugins.allocations.exact_mean import renormalise
from autoprune_plugins.allocations.outliers import outlier_fraction

M = 5.0
LAMBDA = 0.08


class OWL(Allocation):
    name = "owl"
    needs = frozenset({"sum_sq"})
    params = ("owl_m", "owl_lambda")

    def check(self, space: Mapping[str, Any]) -> None:
        for key, default in (("owl_m", M), ("owl_lambda", LAMBDA)):
            for value in possible_values(space.get(key, default)):
                if not is_number(value) or value <= 0:
                    raise ConfigError(f"space.prune.{key} must be a positive number, got {value!r}")

    def prepare(self, context: StudyContext, units: Sequence[AllocationUnit], space: Mapping[str, Any]) -> None:
        m = space.get("owl_m", M)
        if isinstance(m, (int, float)):  # a searched M is scored when sampled
            for unit in units:
                outlier_fraction(context, unit, float(m))

    def ratios(
        self, target: float, units: Sequence[AllocationUnit], context: StudyContext, params: Mapping[str, Any]
    ) -> list[float]:
        m, lam = float(params.get("owl_m", M)), float(params.get("owl_lambda", LAMBDA))
        outliers = [outlier_fraction(context, unit, m) for unit in units]
        spread = max(outliers) - min(outliers)
        if spread == 0:
            return [float(target)] * len(units)
        scaled = [2 * lam * (d - min(outliers)) / spread for d in outliers]
        centre = sum(scaled) / len(scaled)
        return renormalise(float(target), [-(x - centre) for x in scaled], [u.size for u in units])


@hookimpl
def register_allocations() -> list[Allocation]:
    return [OWL()]
