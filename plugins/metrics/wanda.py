"""Wanda: score |W_ij| · ‖X_j‖, ranked within each output row (Sun et al., 2023).

‖X_j‖ is the L2 norm of input channel j over the calibration tokens, so a small weight on a
channel with large activations survives where magnitude pruning would remove it. As in the
reference code the norm enters as sqrt(Σ_t x_tj² / sequences), a constant multiple of ‖X_j‖
that ranks identically, and scores are float32 whatever the model's dtype (half precision
would overflow large norms and tie many scores within a row).
"""

from torch import Tensor

from autoprune.plugin import LinearStats, PruningMetric, hookimpl


class Wanda(PruningMetric):
    name = "wanda"
    comparison = "row"
    needs = frozenset({"sum_sq"})

    def score(self, weight: Tensor, stats: LinearStats) -> Tensor:
        return weight.abs().float() * stats.scaler_row.sqrt().to(weight.device).unsqueeze(0)


@hookimpl
def register_metrics() -> list[PruningMetric]:
    return [Wanda()]
