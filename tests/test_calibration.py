"""Calibration statistics equal the sums computed directly from the captured inputs, and do not
depend on how the calibration windows are batched nor on the rank of a linear's input."""

import pytest
import torch
import transformers
from torch import nn

from autoprune.calibration import BlockInputs, collect_stats, cosine_weighting
from autoprune.model import DecoderLayout, decoder_layout
from autoprune_plugins.allocations.outliers import outlier_fraction

KINDS = {"sum", "sum_sq", "xtx", "cosine", "cosine_centred"}


class TwoLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 3)
        self.second = nn.Linear(3, 2)

    def forward(self, x, **kwargs):  # a causal LM is called with use_cache=False
        hidden = torch.relu(self.first(x))
        return self.second(hidden.reshape(-1, hidden.shape[-1]))  # flattened to 2-D, as OPT's fc1 and fc2 get it


def test_stats_match_brute_force_sums():
    torch.manual_seed(0)
    model = TwoLinears()
    layout = DecoderLayout(blocks=[model], prefix="blocks", linears=[{"first": model.first, "second": model.second}])
    inputs = torch.randn(5, 7, 4)  # 5 windows of 7 tokens
    stats = collect_stats(model, layout, inputs, KINDS, batch_size=2)

    x1 = inputs.reshape(-1, 4)
    x2 = torch.relu(model.first(x1)).detach()
    for name, x in (("first", x1), ("second", x2)):
        s = stats[name]
        assert (s.count, s.samples) == (35, 5)
        assert s.sum.dtype == torch.float64 and torch.allclose(s.sum.float(), x.sum(0), atol=1e-5)
        assert torch.allclose(s.scaler_row.sqrt(), x.norm(dim=0) / 5**0.5, atol=1e-5)  # ‖X_j‖ / √sequences
        assert torch.allclose(s.mean, x.mean(0), atol=1e-5)
        assert torch.allclose(s.variance, x.var(0, unbiased=False), atol=1e-5)
        assert torch.allclose(s.xtx, x.T @ x, atol=1e-4)
        a = getattr(model, name)(x).detach()
        assert torch.allclose(s.cosine, cosine_weighting(x, a), rtol=1e-5)

        def centred(t):  # within each window of 7 tokens
            t = t.reshape(5, 7, -1)
            return (t - t.mean(1, keepdim=True)).reshape(35, -1)

        assert torch.allclose(s.cosine_centred, cosine_weighting(centred(x), centred(a)), rtol=1e-4)


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


@pytest.fixture(scope="module")
def random_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=128,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(config).eval().requires_grad_(False), torch.randint(0, 128, (16, 64))


@pytest.fixture(params=["opt", "llama"])
def model_and_windows(request, tiny_context, random_llama):
    """OPT flattens fc1's and fc2's input to (windows·tokens, hidden); Llama keeps every input 3-D."""
    if request.param == "opt":
        return tiny_context.model, tiny_context.calibration[:, :64]  # 16 windows
    return random_llama


def _sequential_stats(model, windows, batch_size):
    layout = decoder_layout(model)
    inputs = BlockInputs(model, layout, windows, batch_size=batch_size)
    stats = {}
    for index in range(len(layout)):
        stats.update(inputs.collect(index, KINDS))
        inputs.advance(index)
    return stats


@pytest.mark.parametrize("mode", ["dense-once", "sequential"])
def test_statistics_count_sequences_whatever_the_batch_size(model_and_windows, mode):
    model, windows = model_and_windows
    windows_count, tokens = windows.shape
    if mode == "dense-once":
        one, eight = (collect_stats(model, decoder_layout(model), windows, KINDS, batch_size) for batch_size in (1, 8))
    else:
        one, eight = (_sequential_stats(model, windows, batch_size) for batch_size in (1, 8))
    assert one.keys() == eight.keys() and one
    for name, s in one.items():
        assert (s.samples, s.count) == (windows_count, windows_count * tokens)
        assert (eight[name].samples, eight[name].count) == (s.samples, s.count)
        for kind in KINDS:
            expected, actual = getattr(s, kind), getattr(eight[name], kind)
            scale = float(expected.abs().max())  # float32 sums in another order: compare to the largest entry
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale, msg=f"{name}.{kind}")


def test_owl_outlier_fractions_match_a_reference_from_plain_forward_hooks(tiny_context):
    """OWL's D_l on OPT, whose fc1 and fc2 see 2-D inputs: Wanda scores pooled per block, as in OWL's code."""
    model, windows, m = tiny_context.model, tiny_context.calibration, 5.0
    linears = tiny_context.layout.all_linears()
    inputs = {name: [] for name in linears}

    def keep(name):
        return lambda module, args, output: inputs[name].append(args[0].reshape(-1, args[0].shape[-1]))

    handles = [linear.register_forward_hook(keep(name)) for name, linear in linears.items()]
    try:
        with torch.no_grad():
            model(windows, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()

    def wanda(name):  # |W_ij| · sqrt(Σ_t x_tj² / sequences)
        x = torch.cat(inputs[name]).double()  # (tokens, in)
        return linears[name].weight.double().abs() * (x.square().sum(0) / len(windows)).sqrt()

    for unit in tiny_context.layout.units("block"):
        scores = torch.cat([wanda(name).reshape(-1) for name in unit.linears])
        reference = float((scores > m * scores.mean()).double().mean())
        assert outlier_fraction(tiny_context, unit, m) == pytest.approx(reference, abs=1e-4), unit.label
