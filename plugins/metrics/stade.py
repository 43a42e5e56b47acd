"""STADE: score |W_ij| · std(X_j), ranked within each output row, with an optional bias fold.

Pruning weight W_ij removes, on average, mean(X_j) · W_ij from output i. The bias fold adds
that expectation back: b_i += Σ_j mean(X_j) · W_ij over the pruned j, computed from the weights
before they are zeroed. A linear without a bias gets one for the trial (undone with the rest).
Space parameter: `stade_bias_fold` (default true).
"""

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from autoprune.plugin import (
    ConfigError,
    Journal,
    LinearStats,
    PruningMetric,
    SparsityPattern,
    hookimpl,
    possible_values,
)
from autoprune_plugins.sparsity import prune_mask


class STADE(PruningMetric):
    name = "stade"
    comparison = "row"
    needs = frozenset({"sum", "sum_sq"})
    params = ("stade_bias_fold",)
    solves = True

    def score(self, weight: Tensor, stats: LinearStats) -> Tensor:
        return weight.abs().float() * stats.variance.sqrt().to(weight.device).unsqueeze(0)

    def check(self, space: Mapping[str, Any]) -> None:
        for fold in possible_values(space.get("stade_bias_fold", True)):
            if not isinstance(fold, bool):
                raise ConfigError(f"space.prune.stade_bias_fold must be true or false, got {fold!r}")

    def solve(
        self,
        linear: nn.Linear,
        stats: LinearStats,
        ratio: float,
        pattern: SparsityPattern,
        journal: Journal,
        stade_bias_fold: bool = True,
    ) -> int:
        weight = linear.weight
        mask = prune_mask(self.score(weight, stats), ratio, pattern, self.comparison)
        if stade_bias_fold:
            removed_mean = (weight.detach().float() * mask) @ stats.mean.to(weight.device)
            fold_into_bias(linear, removed_mean.to(weight.dtype), journal)
        journal.zero(weight, mask)
        return int(mask.sum())


def fold_into_bias(linear: nn.Linear, delta: Tensor, journal: Journal) -> None:
    if linear.bias is None:
        linear.bias = nn.Parameter(delta.clone(), requires_grad=False)
        journal.on_undo(lambda: setattr(linear, "bias", None))
    else:
        journal.overwrite(linear.bias, linear.bias.detach() + delta)


@hookimpl
def register_metrics() -> list[PruningMetric]:
    return [STADE()]
