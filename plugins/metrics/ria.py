"""RIA, relative importance and activations (Zhang et al., 2024), ranked across the whole matrix:

    score_ij = ( |W_ij| / Σ_i |W_ij|  +  |W_ij| / Σ_j |W_ij| ) · ‖X_j‖^a,   a = 0.5

The first two terms compare a weight with the others of its input column and of its output
row, so no row or column is emptied; ‖X_j‖ enters as in Wanda, as sqrt(Σ_t x_tj² / sequences).
"""

from torch import Tensor

from autoprune.plugin import LinearStats, PruningMetric, hookimpl

POWER = 0.5


class RIA(PruningMetric):
    name = "ria"
    comparison = "matrix"
    needs = frozenset({"sum_sq"})

    def score(self, weight: Tensor, stats: LinearStats) -> Tensor:
        magnitude = weight.abs().float()
        relative = magnitude / magnitude.sum(dim=0, keepdim=True) + magnitude / magnitude.sum(dim=1, keepdim=True)
        return relative * stats.scaler_row.sqrt().pow(POWER).to(weight.device).unsqueeze(0)


@hookimpl
def register_metrics() -> list[PruningMetric]:
    return [RIA()]
