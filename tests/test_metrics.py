"""Metric scores against hand-computed values, and the masks they produce."""

import torch

from autoprune.calibration import LinearStats
from autoprune_plugins.compressors.masks import lowest_scores_mask
from autoprune_plugins.metrics.magnitude import Magnitude
from autoprune_plugins.metrics.wanda import Wanda

W = torch.tensor([[1.0, -2.0, 3.0], [-0.5, 4.0, 0.25]])
# inputs X (4 tokens x 3 channels): column norms are sqrt(1+1+1+1)=2, sqrt(9)=3 , sqrt(0.25)=0.5
X = torch.tensor([[1.0, 3.0, 0.5], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
STATS = LinearStats(sum=X.sum(0), sum_sq=X.square().sum(0), count=4)


def test_magnitude_is_the_absolute_weight():
    assert torch.equal(Magnitude().score(W, STATS), W.abs())


def test_wanda_is_weight_times_input_norm():
    expected = torch.tensor([[1.0 * 2, 2.0 * 3, 3.0 * 0.5], [0.5 * 2, 4.0 * 3, 0.25 * 0.5]])
    assert torch.allclose(Wanda().score(W, STATS), expected)


def test_row_comparison_prunes_the_same_count_in_every_row():
    mask = lowest_scores_mask(Wanda().score(W, STATS), 0.34, "row")  # floor(3 * 0.34) = 1 per row
    assert mask.tolist() == [[False, False, True], [False, False, True]]


def test_matrix_comparison_prunes_the_globally_lowest():
    mask = lowest_scores_mask(Magnitude().score(W, STATS), 0.5, "matrix")  # 3 of 6: 0.25, 0.5, 1.0
    assert mask.tolist() == [[True, False, False], [True, False, True]]


def test_achieved_sparsity_per_group_is_exact():
    torch.manual_seed(0)
    score = torch.rand(64, 100)
    for ratio in (0.0, 0.25, 0.5, 0.77):
        row_mask = lowest_scores_mask(score, ratio, "row")
        assert (row_mask.sum(1) == int(100 * ratio)).all()
        assert int(lowest_scores_mask(score, ratio, "matrix").sum()) == int(6400 * ratio)
