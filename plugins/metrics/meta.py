"""OptiShear's meta metric: the operators applied to weights and activations are searched.

    score_ij = [ c_W(|W|) · u_W(|W|) ]_ij  ·  [ c_X(X) · u_X(sqrt(X)) ]_j,   ranked within each row

X_j = Σ_t x_tj² / sequences (Wanda's statistic, so sqrt(X) ∝ ‖X_j‖). Each u is an elementwise
transform, each c a normalising coefficient computed from its argument:

    transforms  u: identity, sqrt, square, exp, log, sigmoid, softmax (over the input dimension)
    normalisers c: one, row_sum (1/Σ over a row), column_sum (1/Σ over a column),
                   relative_sum (1/(row sum + column sum)), total_sum (1/Σ), mean (1/mean),
                   frobenius (1/‖·‖_F)

For X, a 1 × in row vector, `row_sum` is its total and `column_sum` each element itself. With
every operator the identity / one, the score is |W| · sqrt(X): exactly Wanda's. (`one` is the
constant 1; the reference computes it as A/A, which is NaN wherever A is 0.)

Space parameters: meta_weight_transform, meta_weight_norm, meta_activation_transform,
meta_activation_norm (see conf/space/meta.yaml).
"""

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from autoprune.plugin import ConfigError, LinearStats, PruningMetric, hookimpl, possible_values

TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda a: a,
    "sqrt": torch.sqrt,
    "square": torch.square,
    "exp": torch.exp,
    "log": torch.log,
    "sigmoid": torch.sigmoid,
    "softmax": lambda a: torch.softmax(a, dim=1),
}

NORMALISERS: dict[str, Callable[[Tensor], Tensor]] = {
    "one": lambda a: torch.ones_like(a),
    "row_sum": lambda a: 1 / a.sum(dim=1, keepdim=True),
    "column_sum": lambda a: 1 / a.sum(dim=0, keepdim=True),
    "relative_sum": lambda a: 1 / (a.sum(dim=1, keepdim=True) + a.sum(dim=0, keepdim=True)),
    "total_sum": lambda a: 1 / a.sum(),
    "mean": lambda a: 1 / a.mean(),
    "frobenius": lambda a: 1 / torch.linalg.matrix_norm(a),
}

OPERATORS = {
    "meta_weight_transform": TRANSFORMS,
    "meta_weight_norm": NORMALISERS,
    "meta_activation_transform": TRANSFORMS,
    "meta_activation_norm": NORMALISERS,
}
IDENTITY = {
    "meta_weight_transform": "identity",
    "meta_weight_norm": "one",
    "meta_activation_transform": "identity",
    "meta_activation_norm": "one",
}


class Meta(PruningMetric):
    name = "meta"
    comparison = "row"
    needs = frozenset({"sum_sq"})
    params = tuple(OPERATORS)

    def check(self, space: Mapping[str, Any]) -> None:
        for key, table in OPERATORS.items():
            for value in possible_values(space.get(key, IDENTITY[key])):
                if not isinstance(value, str) or value not in table:
                    raise ConfigError(f"space.prune.{key} has {value!r}; choose from {', '.join(table)}")

    def score(
        self,
        weight: Tensor,
        stats: LinearStats,
        meta_weight_transform: str = "identity",
        meta_weight_norm: str = "one",
        meta_activation_transform: str = "identity",
        meta_activation_norm: str = "one",
    ) -> Tensor:
        w = weight.abs().float()
        x = stats.scaler_row.to(weight.device).unsqueeze(0)
        weight_term = NORMALISERS[meta_weight_norm](w) * TRANSFORMS[meta_weight_transform](w)
        activation_term = NORMALISERS[meta_activation_norm](x) * TRANSFORMS[meta_activation_transform](x.sqrt())
        return weight_term * activation_term


@hookimpl
def register_metrics() -> list[PruningMetric]:
    return [Meta()]
