"""Searched allocation: one offset per decoder block from the trial, renormalised to the exact mean.

Each block's ratio is clip(s + offset_l + c, 0, max_ratio), where the common shift c is found by
bisection so that the mean of the ratios, weighted by each block's prunable parameter count,
equals the target s exactly. Unlike a soft penalty, every trial then has the sparsity it asked
for, and the sampler searches only the shape of the allocation.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from autoprune import hookimpl
from autoprune.components import Allocation
from autoprune.context import StudyContext
from autoprune.errors import ConfigError

MAX_RATIO = 0.99


def renormalise(
    target: float, offsets: Sequence[float], sizes: Sequence[int], max_ratio: float = MAX_RATIO
) -> list[float]:
    """Ratios target + offset + c, clipped to [0, max_ratio], with weighted mean exactly `target`."""
    if not 0.0 <= target <= max_ratio:
        raise ConfigError(f"target sparsity {target} is outside [0, {max_ratio}]")
    total = float(sum(sizes))

    def ratios(shift: float) -> list[float]:
        return [min(max(target + offset + shift, 0.0), max_ratio) for offset in offsets]

    def mean(shift: float) -> float:
        return sum(r * n for r, n in zip(ratios(shift), sizes)) / total

    low, high = -1.0 - max(offsets), 1.0 - min(offsets)  # mean(low) = 0, mean(high) = max_ratio
    for _ in range(200):
        middle = (low + high) / 2
        if mean(middle) < target:
            low = middle
        else:
            high = middle
    return ratios((low + high) / 2)


class Searched(Allocation):
    name = "searched"

    def ratios(self, target: float, context: StudyContext, params: Mapping[str, Any]) -> list[float]:
        offsets = params.get("offsets")
        n_blocks = len(context.layout)
        if offsets is None:
            return [float(target)] * n_blocks
        if len(offsets) != n_blocks:
            raise ConfigError(f"the searched allocation got {len(offsets)} offsets for {n_blocks} decoder blocks")
        return renormalise(float(target), [float(o) for o in offsets], context.layout.block_sizes())


@hookimpl
def register_allocations() -> list[Allocation]:
    return [Searched()]
