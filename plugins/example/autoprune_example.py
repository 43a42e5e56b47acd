"""An example third-party plugin: installing this package is all it takes for autoprune to use it.

pip install ./plugins/example
autoprune plugins                     # lists relative_magnitude and nonzeros
autoprune space.prune.metric.choices=[relative_magnitude] scorers=[perplexity,size,nonzeros]
"""

import torch
from torch import Tensor

from autoprune.plugin import LinearStats, PruningMetric, Scorer, StudyContext, hookimpl


class RelativeMagnitude(PruningMetric):
    """|W_ij| divided by the mean |W| of its output row, ranked across the whole matrix.

    Rows with small weights overall keep as many weights as rows with large ones, which plain
    magnitude pruning does not guarantee.
    """

    name = "relative_magnitude"
    comparison = "matrix"

    def score(self, weight: Tensor, stats: LinearStats) -> Tensor:
        magnitude = weight.abs()
        return magnitude / magnitude.mean(dim=1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)


class NonzeroParameters(Scorer):
    """Millions of nonzero parameters left in the model: a size measure that ignores storage format."""

    name = "nonzeros"
    objectives = {"nonzero_params_m": "minimize"}

    def score(self, context: StudyContext) -> dict[str, float]:
        count = sum(int(torch.count_nonzero(p)) for p in context.model.parameters())
        return {"nonzero_params_m": count / 1e6}


@hookimpl
def register_metrics() -> list[PruningMetric]:
    return [RelativeMagnitude()]


@hookimpl
def register_scorers() -> list[Scorer]:
    return [NonzeroParameters()]
