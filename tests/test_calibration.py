"""Calibration statistics equal the sums computed directly from the captured inputs."""

import torch
from torch import nn

from autoprune.calibration import BlockInputs, collect_stats
from autoprune.model import DecoderLayout


class TwoLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 3)
        self.second = nn.Linear(3, 2)

    def forward(self, x, **kwargs):  # a causal LM is called with use_cache=False
        return self.second(torch.relu(self.first(x)))


def test_stats_match_brute_force_sums():
    torch.manual_seed(0)
    model = TwoLinears()
    layout = DecoderLayout(blocks=[model], prefix="blocks", linears=[{"first": model.first, "second": model.second}])
    inputs = torch.randn(5, 7, 4)  # 5 windows of 7 tokens
    stats = collect_stats(model, layout, inputs, {"sum_sq", "xtx"}, batch_size=2)

    x1 = inputs.reshape(-1, 4)
    x2 = torch.relu(model.first(x1)).detach()
    for name, x in (("first", x1), ("second", x2)):
        s = stats[name]
        assert s.count == 35
        assert s.sum.dtype == torch.float64 and torch.allclose(s.sum.float(), x.sum(0), atol=1e-5)
        assert torch.allclose(s.scaler_row.sqrt(), x.norm(dim=0) / 5**0.5, atol=1e-5)  # ‖X_j‖ / √sequences
        assert torch.allclose(s.mean, x.mean(0), atol=1e-5)
        assert torch.allclose(s.variance, x.var(0, unbiased=False), atol=1e-5)
        assert torch.allclose(s.xtx, x.T @ x, atol=1e-4)


def test_xtx_is_only_collected_when_asked():
    model = TwoLinears()
    layout = DecoderLayout(blocks=[model], prefix="blocks", linears=[{"first": model.first}])
    stats = collect_stats(model, layout, torch.randn(2, 3, 4), {"sum_sq"})
    assert stats["first"].xtx is None


def test_replaying_unpruned_blocks_reproduces_the_dense_statistics(tiny_context):
    inputs = BlockInputs(tiny_context.model, tiny_context.layout, tiny_context.calibration, batch_size=8)
    for index in range(len(tiny_context.layout)):
        stats = inputs.collect(index, {"sum_sq"})
        for name, s in stats.items():
            dense = tiny_context.stats[name]
            assert s.count == dense.count and s.samples == dense.samples
            assert torch.allclose(s.sum_sq, dense.sum_sq, rtol=1e-5)
        inputs.advance(index)
