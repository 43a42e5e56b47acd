"""Magnitude: score |W_ij|, ranked across the whole matrix (the classic baseline)."""

from torch import Tensor

from autoprune.plugin import LinearStats, PruningMetric, hookimpl


class Magnitude(PruningMetric):
    name = "magnitude"
    comparison = "matrix"

    def score(self, weight: Tensor, stats: LinearStats) -> Tensor:
        return weight.abs()


@hookimpl
def register_metrics() -> list[PruningMetric]:
    return [Magnitude()]
