"""ACE: the cosine loss that pruning one weight causes in the layer's outputs (Mi et al., 2025).

Derivation. For a calibration token t the linear's output is a = W x + b. Pruning W_ij alone
changes one output component, a' = a + δ e_i with δ = −W_ij x_j, so

    cos(a, a') = (‖a‖² + a_i δ) / (‖a‖ · sqrt(‖a‖² + 2 a_i δ + δ²)).

With r = a_i / ‖a‖ and ε = δ / ‖a‖ this is (1 + r ε) / sqrt(1 + 2 r ε + ε²). The paper's
first-order expression, L = 1 − cos ≈ −a_i δ / ‖a‖² = −r ε, is the change of the numerator
alone; the normalisation by ‖a'‖ contributes +r ε at the same order and the two cancel (a small
step along a's own direction does not turn it). The leading term is the second-order one,

    L_ij,t = 1 − cos ≈ ε² (1 − r²) / 2 = W_ij² · x_tj² · (‖a_t‖² − a_ti²) / (2 ‖a_t‖⁴),

i.e. half the squared sine of the angle through which the perpendicular part of δ e_i turns a.
Summed over the calibration tokens, and with the constant ½ dropped (it ranks the same):

    CosP:  S_ij = W_ij² · Σ_t x_tj² (‖a_t‖² − a_ti²) / ‖a_t‖⁴

It is Wanda's score squared, |W_ij|² ‖X_j‖², with every token's x_tj² weighted by how far it
can turn that token's output: tokens whose outputs are short, or which are not dominated by
component i, count more. When the weighting is the same for every token (outputs of equal
norm, no dominant component), CosP ranks each row exactly as Wanda does.

VarP applies the same loss to what makes tokens distinct rather than to the raw outputs: inputs
and outputs centred by their mean over the tokens of each calibration window (the bias cancels
and ã_t = W x̃_t, so the derivation holds unchanged). Its unweighted limit is Σ_t x̃_tj², the
input variance of STADE. CosP+VarP (`ace`) adds the two losses: both are sums of cosine losses
over the same tokens, so they share a scale.

Scores compete within each output row, as Wanda's do. The statistics Σ_t x_tj² (‖a_t‖² − a_ti²)
/ ‖a_t‖⁴ are an (out × in) matrix per linear, collected only when one of these metrics is in
the space.
"""

from typing import ClassVar

from torch import Tensor

from autoprune.plugin import LinearStats, PruningMetric, StatKind, hookimpl


class _CosineLoss(PruningMetric):
    """W_ij² times the sum of the token-weighted statistics in `weightings`."""

    comparison = "row"
    weightings: ClassVar[tuple[str, ...]]

    def score(self, weight: Tensor, stats: LinearStats) -> Tensor:
        weighting = sum(getattr(stats, kind).to(weight.device) for kind in self.weightings)
        return weight.float().square() * weighting


class CosP(_CosineLoss):
    name = "ace_cos"
    weightings = ("cosine",)
    needs: ClassVar[frozenset[StatKind]] = frozenset({"cosine"})


class VarP(_CosineLoss):
    name = "ace_var"
    weightings = ("cosine_centred",)
    needs: ClassVar[frozenset[StatKind]] = frozenset({"cosine_centred"})


class CosVarP(_CosineLoss):
    name = "ace"
    weightings = ("cosine", "cosine_centred")
    needs: ClassVar[frozenset[StatKind]] = frozenset({"cosine", "cosine_centred"})


@hookimpl
def register_metrics() -> list[PruningMetric]:
    return [CosP(), VarP(), CosVarP()]
