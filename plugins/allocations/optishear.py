"""OptiShear's searched ratios: each unit takes one of {s − δ, s, s + δ} (δ = 0.05).

The trial picks a step in {-1, 0, 1} per unit (space parameter `steps`, per layer); OptiShear
searched these with NSGA-III. Where OptiShear penalises a missed mean softly, here a common
shift makes the size-weighted mean exactly s (with blocks of equal size and steps summing to
zero there is nothing to shift). Space parameters: `steps`, `optishear_delta` (default 0.05).
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

DELTA = 0.05


class OptiShear(Allocation):
    name = "optishear"
    params = ("steps", "optishear_delta")

    def check(self, space: Mapping[str, Any]) -> None:
        for delta in possible_values(space.get("optishear_delta", DELTA)):
            if not is_number(delta) or not 0 < delta < 0.5:
                raise ConfigError(f"space.prune.optishear_delta must be in (0, 0.5), got {delta!r}")
        steps = space.get("steps")
        choices = steps.get("choices") if isinstance(steps, Mapping) else None
        valid = isinstance(choices, (list, tuple)) and all(is_number(c) and c in (-1, 0, 1) for c in choices)
        if not valid or not steps.get("per_layer"):
            raise ConfigError(
                "the optishear allocation needs space.prune.steps: {choices: [-1, 0, 1], per_layer: true}"
            )

    def ratios(
        self, target: float, units: Sequence[AllocationUnit], context: StudyContext, params: Mapping[str, Any]
    ) -> list[float]:
        delta = float(params.get("optishear_delta", DELTA))
        steps = params.get("steps") or [0] * (max(u.slot for u in units) + 1)
        offsets = [delta * int(steps[unit.slot]) for unit in units]
        return renormalise(float(target), offsets, [u.size for u in units])


@hookimpl
def register_allocations() -> list[Allocation]:
    return [OptiShear()]
