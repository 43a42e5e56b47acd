"""Metric scores against hand-computed values, and the exact counts their masks prune."""

import math

import pytest
import torch

from autoprune.calibration import LinearStats, accumulating
from autoprune.components import SparsityPattern
from autoprune.errors import ConfigError
from autoprune.journal import Journal
from autoprune_plugins.metrics.ace import CosP, CosVarP, VarP
from autoprune_plugins.metrics.magnitude import Magnitude
from autoprune_plugins.metrics.meta import Meta
from autoprune_plugins.metrics.ria import RIA
from autoprune_plugins.metrics.stade import STADE
from autoprune_plugins.metrics.wanda import Wanda
from autoprune_plugins.sparsity import lowest_scores_mask, n_of_m_mask, prune_mask

W = torch.tensor([[1.0, -2.0, 3.0], [-0.5, 4.0, 0.25]])
# calibration inputs: 2 sequences of 2 tokens, 3 channels
X = torch.tensor([[1.0, 3.0, 0.5], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
STATS = LinearStats(sum=X.sum(0).double(), sum_sq=X.square().sum(0).double(), count=4, samples=2)
SCALER_ROW = [4 / 2, 9 / 2, 0.25 / 2]  # Σx² per channel / sequences
STD = [math.sqrt(0.75), math.sqrt(9 / 4 - 0.75**2), math.sqrt(0.25 / 4 - 0.125**2)]  # population std per channel
MEAN = [0.5, 0.75, 0.125]


def by_hand(f):
    return torch.tensor([[f(i, j) for j in range(3)] for i in range(2)])


def test_magnitude_is_the_absolute_weight():
    assert torch.equal(Magnitude().score(W, STATS), W.abs())


def test_wanda_is_weight_times_input_norm():
    expected = by_hand(lambda i, j: abs(W[i, j].item()) * math.sqrt(SCALER_ROW[j]))
    assert torch.allclose(Wanda().score(W, STATS), expected)


def test_ria_is_relative_importance_times_root_activation():
    column_sums, row_sums = [1.5, 6.0, 3.25], [6.0, 4.75]
    expected = by_hand(
        lambda i, j: (abs(W[i, j].item()) / column_sums[j] + abs(W[i, j].item()) / row_sums[i]) * SCALER_ROW[j] ** 0.25
    )
    assert torch.allclose(RIA().score(W, STATS), expected)
    assert RIA.comparison == "matrix"


def test_stade_is_weight_times_input_std():
    expected = by_hand(lambda i, j: abs(W[i, j].item()) * STD[j])
    assert torch.allclose(STADE().score(W, STATS), expected)


def test_stade_folds_the_expected_removed_output_into_the_bias():
    linear = torch.nn.Linear(3, 2)
    linear.weight.data = W.clone()
    bias = linear.bias.detach().clone()
    journal = Journal()
    # one weight per row goes: w02 (score 3 · 0.217 = 0.65) and w12 (0.25 · 0.217 = 0.054)
    assert STADE().solve(linear, STATS, 0.34, SparsityPattern(), journal) == 2
    assert linear.weight[0, 2] == 0 and linear.weight[1, 2] == 0
    expected = bias + torch.tensor([3.0 * MEAN[2], 0.25 * MEAN[2]])
    assert torch.allclose(linear.bias, expected)
    journal.restore()
    assert torch.equal(linear.weight, W) and torch.equal(linear.bias, bias)


def test_stade_adds_a_bias_when_the_linear_has_none():
    linear = torch.nn.Linear(3, 2, bias=False)
    linear.weight.data = W.clone()
    journal = Journal()
    STADE().solve(linear, STATS, 0.34, SparsityPattern(), journal)
    assert torch.allclose(linear.bias, torch.tensor([3.0 * MEAN[2], 0.25 * MEAN[2]]))
    journal.restore()
    assert linear.bias is None


def test_meta_operators_by_hand():
    score = Meta().score(
        W,
        STATS,
        meta_weight_transform="sqrt",
        meta_weight_norm="row_sum",
        meta_activation_transform="square",
        meta_activation_norm="total_sum",
    )
    row_sums, total = [6.0, 4.75], sum(SCALER_ROW)
    expected = by_hand(lambda i, j: math.sqrt(abs(W[i, j].item())) / row_sums[i] * SCALER_ROW[j] / total)
    assert torch.allclose(score, expected)


def test_meta_rejects_unknown_operators():
    with pytest.raises(ConfigError, match="meta_weight_norm has 'median'; choose from one, row_sum"):
        Meta().check({"meta_weight_norm": {"choices": ["one", "median"]}})


def test_meta_with_identity_operators_is_exactly_wanda(tiny_context):
    for name, linear in tiny_context.layout.all_linears().items():
        stats = tiny_context.stats[name]
        for ratio in (0.3, 0.5, 0.7):
            wanda = lowest_scores_mask(Wanda().score(linear.weight, stats), ratio, "row")
            meta = lowest_scores_mask(Meta().score(linear.weight, stats), ratio, "row")
            assert torch.equal(wanda, meta), name


def test_row_comparison_prunes_the_same_count_in_every_row():
    mask = lowest_scores_mask(Wanda().score(W, STATS), 0.34, "row")  # floor(3 · 0.34) = 1 per row
    assert mask.tolist() == [[False, False, True], [False, False, True]]


def test_matrix_comparison_prunes_the_globally_lowest():
    mask = lowest_scores_mask(Magnitude().score(W, STATS), 0.5, "matrix")  # 3 of 6: 0.25, 0.5, 1.0
    assert mask.tolist() == [[True, False, False], [True, False, True]]


def test_n_of_m_keeps_the_n_highest_of_every_m():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.4, 0.3, 0.2]])
    assert n_of_m_mask(score, SparsityPattern.parse("2:4")).tolist() == [
        [False, True, False, True, True, False, False, True]
    ]
    four_of_eight = n_of_m_mask(score, SparsityPattern.parse("4:8"))
    assert four_of_eight.tolist() == [[False, False, False, False, True, True, True, True]]


def test_achieved_sparsity_per_group_is_exact():
    torch.manual_seed(0)
    score = torch.rand(64, 96)
    for ratio in (0.0, 0.25, 0.5, 0.77):
        assert (lowest_scores_mask(score, ratio, "row").sum(1) == int(96 * ratio)).all()
        assert int(lowest_scores_mask(score, ratio, "matrix").sum()) == int(64 * 96 * ratio)
    for text in ("2:4", "4:8"):
        pattern = SparsityPattern.parse(text)
        kept = (~prune_mask(score, 0.9, pattern, "matrix")).reshape(64, -1, pattern.m).sum(2)
        assert (kept == pattern.n).all()


@pytest.mark.parametrize("text", ["3:2", "2:2", "half", "2:4:8"])
def test_bad_patterns_are_refused(text):
    with pytest.raises(ValueError, match="sparsity pattern"):
        SparsityPattern.parse(text)


def _brute_force_cosine_losses(
    linear: torch.nn.Linear, windows: torch.Tensor, centred: bool, fraction: float = 1.0
) -> torch.Tensor:
    """Σ_t (1 − cos(a_t, a'_t)) with W_ij scaled down by `fraction` (1: zeroed), for every (i, j), in float64."""
    weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
    x = windows.double()
    if centred:
        x = x - x.mean(1, keepdim=True)
        bias = torch.zeros_like(bias)  # centred outputs: the bias cancels
    dense = x @ weight.T + bias
    losses = torch.zeros_like(weight)
    for i in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            pruned = dense.clone()
            pruned[..., i] -= fraction * weight[i, j] * x[..., j]
            losses[i, j] = (1 - torch.nn.functional.cosine_similarity(dense, pruned, dim=-1)).sum()
    return losses


def _ace_layer(metric):
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 12)
    windows = torch.randn(3, 10, 48) + torch.linspace(-1, 1, 48)  # 3 windows of 10 tokens, non-zero means
    with accumulating({"layer": linear}, metric.needs) as accumulators:
        linear(windows)
    return linear, windows, metric.score(linear.weight.detach(), accumulators["layer"].result()).double()


@pytest.mark.parametrize(("metric", "centred"), [(CosP(), False), (VarP(), True)])
def test_ace_score_is_the_leading_term_of_the_brute_force_cosine_loss(metric, centred):
    linear, windows, score = _ace_layer(metric)
    # removing a fraction η of W_ij loses η² · score / 2 of cosine, up to O(η³)
    eta = 1e-3
    exact = _brute_force_cosine_losses(linear, windows, centred, fraction=eta)
    assert torch.allclose(score, 2 * exact / eta**2, rtol=1e-2)


@pytest.mark.parametrize(("metric", "centred"), [(CosP(), False), (VarP(), True)])
def test_ace_ranks_whole_weight_removals_as_the_brute_force_loss_does(metric, centred):
    linear, windows, score = _ace_layer(metric)
    exact = _brute_force_cosine_losses(linear, windows, centred)
    # removing one of 48 inputs turns the output a little: the leading term is close, not exact
    assert ((score / (2 * exact)) - 1).abs().median() < 0.02
    agree = prune_mask(score.float(), 0.5, SparsityPattern(), "row") == prune_mask(
        exact.float(), 0.5, SparsityPattern(), "row"
    )
    assert agree.float().mean() > 0.99


def test_ace_combines_the_two_losses_and_reduces_to_wanda_for_equal_token_weights():
    torch.manual_seed(1)
    linear = torch.nn.Linear(8, 4)
    with accumulating({"layer": linear}, CosVarP.needs) as accumulators:
        linear(torch.randn(2, 5, 8))
    stats = accumulators["layer"].result()
    weight = linear.weight.detach()
    assert torch.allclose(CosVarP().score(weight, stats), CosP().score(weight, stats) + VarP().score(weight, stats))
    # with a constant token weighting, CosP is Wanda's score squared up to a constant
    uniform = LinearStats(
        stats.sum, stats.sum_sq, stats.count, stats.samples, cosine=torch.ones(4, 1) * stats.sum_sq.float()
    )
    assert torch.allclose(
        CosP().score(weight, uniform), Wanda().score(weight, stats).square() * stats.samples, rtol=1e-5
    )
