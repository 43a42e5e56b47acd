"""Searched allocation: one offset per unit from the trial, renormalised to the exact mean.

Each unit's ratio is clip(s + offset_l + c, 0, 0.99), where the common shift c makes the mean
of the ratios, weighted by each unit's prunable parameter count, equal the target s exactly.
Unlike a soft penalty, every trial then has the sparsity it asked for, and the sampler
searches only the shape of the allocation. Space parameter: `offsets` (per layer).
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


class Searched(Allocation):
    name = "searched"
    params = ("offsets",)

    def check(self, space: Mapping[str, Any]) -> None:
        """Offsets move a unit's ratio around the target, so their range lies within (-1, 1)."""
        for offset in possible_values(space.get("offsets", 0.0)):
            if not is_number(offset) or not -1 < offset < 1:
                raise ConfigError(f"space.prune.offsets takes values in (-1, 1), got {offset!r}")

    def ratios(
        self, target: float, units: Sequence[AllocationUnit], context: StudyContext, params: Mapping[str, Any]
    ) -> list[float]:
        offsets = params.get("offsets")
        if offsets is None:
            return [float(target)] * len(units)
        slots = max(unit.slot for unit in units) + 1
        if len(offsets) < slots:
            raise ConfigError(f"the searched allocation got {len(offsets)} offsets for {slots} allocation units")
        return renormalise(float(target), [float(offsets[unit.slot]) for unit in units], [u.size for u in units])


@hookimpl
def register_allocations() -> list[Allocation]:
    return [Searched()]
