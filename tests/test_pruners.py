"""Every metric prunes exactly the counts it promises, on OPT and Llama decoders, and restores.

SparseGPT is also checked for what its update is for: a lower reconstruction error than
zeroing the same weights without the update.
"""

import dataclasses

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from autoprune.calibration import collect_stats
from autoprune.components import Compressor, Scorer, SparsityPattern
from autoprune.context import StudyContext
from autoprune.journal import Journal
from autoprune.model import DecoderLayout, decoder_layout
from autoprune.registry import build_registry
from autoprune.trial import run_trial
from autoprune_plugins.metrics.sparsegpt import BLOCK_SIZE, SparseGPT
from autoprune_plugins.metrics.wanda import Wanda
from autoprune_plugins.scorers.perplexity import perplexity
from autoprune_plugins.sparsity import lowest_scores_mask

METRICS = ["magnitude", "wanda", "ria", "stade", "meta", "sparsegpt", "ace_cos", "ace_var", "ace"]


class OneLinear(torch.nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x, **kwargs):  # called like a causal LM, with use_cache=False
        return self.linear(x)


def layer_and_stats(rows=32, columns=256, tokens=512, seed=0):
    """A linear layer and statistics of correlated inputs, as real activations are."""
    torch.manual_seed(seed)
    linear = torch.nn.Linear(columns, rows, bias=False)
    x = torch.randn(tokens, 16) @ torch.randn(16, columns) + 0.1 * torch.randn(tokens, columns)
    model = OneLinear(linear)
    layout = DecoderLayout(blocks=[model], prefix="blocks", linears=[{"0": linear}])
    stats = collect_stats(model, layout, x.reshape(8, tokens // 8, columns), {"sum_sq", "xtx"})["0"]
    return linear, stats, x


def test_sparsegpt_update_beats_zeroing_the_same_weights():
    linear, stats, x = layer_and_stats()
    dense = linear.weight.detach().clone()
    SparseGPT().solve(linear, stats, 0.5, SparsityPattern(), Journal())
    mask = linear.weight == 0
    mask_only = dense.masked_fill(mask, 0)
    error_sparsegpt = (x @ dense.T - x @ linear.weight.T).square().sum()
    error_mask_only = (x @ dense.T - x @ mask_only.T).square().sum()
    assert error_sparsegpt < 0.5 * error_mask_only


def test_sparsegpt_counts_per_block_and_per_group():
    linear, stats, _ = layer_and_stats(columns=2 * BLOCK_SIZE + 64)  # two full blocks and a partial one
    pruned = SparseGPT().solve(linear, stats, 0.6, SparsityPattern(), Journal())
    zeros = linear.weight == 0
    starts = range(0, zeros.shape[1], BLOCK_SIZE)
    assert [int(zeros[:, s : s + BLOCK_SIZE].sum()) for s in starts] == [
        int(32 * min(BLOCK_SIZE, zeros.shape[1] - s) * 0.6) for s in starts
    ]
    assert pruned == int(zeros.sum())
    linear, stats, _ = layer_and_stats()
    SparseGPT().solve(linear, stats, 0.0, SparsityPattern.parse("2:4"), Journal())
    assert ((linear.weight != 0).reshape(32, -1, 4).sum(2) == 2).all()


def test_sparsegpt_restores_exactly():
    linear, stats, _ = layer_and_stats()
    dense = linear.weight.detach().clone()
    journal = Journal()
    SparseGPT().solve(linear, stats, 0.5, SparsityPattern(), journal)
    assert not torch.equal(linear.weight, dense)
    journal.restore()
    assert torch.equal(linear.weight, dense)


class GroupCounter(Scorer):
    """Records, during the trial, how many weights survive per comparison group."""

    name = "groups"
    objectives = {"groups": "minimize"}

    def __init__(self):
        self.kept = {}

    def score(self, context):
        self.kept = {name: (linear.weight != 0) for name, linear in context.layout.all_linears().items()}
        return {"groups": 0.0}


def context_for(model, registry, vocab, context_length=32):
    torch.manual_seed(0)
    model.eval().requires_grad_(False)
    layout = decoder_layout(model)
    calibration = torch.randint(0, vocab, (4, context_length))
    stats = collect_stats(model, layout, calibration, {"sum", "sum_sq", "xtx", "cosine", "cosine_centred"})
    return StudyContext(model, None, layout, calibration, calibration[:2], stats, registry)


@pytest.fixture(scope="module")
def small_models():
    registry = build_registry()
    shared = dict(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
    llama_like = dict(shared, intermediate_size=128, num_key_value_heads=2)
    models = {
        "opt": OPTForCausalLM(OPTConfig(**shared, ffn_dim=128, word_embed_proj_dim=64)),
        "llama": LlamaForCausalLM(LlamaConfig(**llama_like)),
        "mistral": MistralForCausalLM(MistralConfig(**llama_like)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(**llama_like)),
    }
    return {name: context_for(model, registry, 96) for name, model in models.items()}


@pytest.mark.parametrize("architecture", ["opt", "llama", "mistral", "qwen2"])
@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_on_opt_and_llama_family_decoders(small_models, architecture, metric):
    context = small_models[architecture]
    before = {name: p.clone() for name, p in context.model.state_dict().items()}
    counter = GroupCounter()
    prune = context.registry.compressor("prune")
    for pattern, sparsity in (("unstructured", 0.5), ("2:4", 0.0), ("4:8", 0.0)):
        result = run_trial(
            context, [prune], [counter], {"prune": {"metric": metric, "sparsity": sparsity, "pattern": pattern}}
        )
        for kept in counter.kept.values():
            if pattern == "unstructured":
                group = context.registry.metric(metric).comparison
                if metric == "sparsegpt":
                    blocks = kept.split(BLOCK_SIZE, dim=1)
                    assert [int((~b).sum()) for b in blocks] == [int(b.numel() * 0.5) for b in blocks]
                elif group == "row":
                    assert ((~kept).sum(1) == int(kept.shape[1] * 0.5)).all()
                else:
                    assert int((~kept).sum()) == int(kept.numel() * 0.5)
            else:
                m = int(pattern.split(":")[1])
                assert (kept.reshape(kept.shape[0], -1, m).sum(2) == m // 2).all()
        assert result.info["prune.achieved_sparsity"] == pytest.approx(0.5, abs=1e-6)
        after = context.model.state_dict()
        assert all(torch.equal(before[name], after[name]) for name in before)


def test_sparsegpt_beats_magnitude_at_half_sparsity_on_the_embedded_model(tiny_context):
    prune, scorer = tiny_context.registry.compressor("prune"), tiny_context.registry.scorer("perplexity")
    values = {
        metric: run_trial(tiny_context, [prune], [scorer], {"prune": {"metric": metric, "sparsity": 0.5}}).values[
            "perplexity"
        ]
        for metric in ("magnitude", "sparsegpt")
    }
    assert values["sparsegpt"] < values["magnitude"]
    assert perplexity(tiny_context.model, tiny_context.evaluation) < values["sparsegpt"]  # and the model is dense again


def test_sequential_mode_calibrates_each_block_on_the_pruned_blocks_before_it(tiny_context):
    prune = tiny_context.registry.compressor("prune")
    sequential = dataclasses.replace(tiny_context, calibration_mode="sequential", stats={})
    before = {name: p.clone() for name, p in tiny_context.model.state_dict().items()}
    masks = {}
    for label, context in (("dense-once", tiny_context), ("sequential", sequential)):
        counter = GroupCounter()
        result = run_trial(context, [prune], [counter], {"prune": {"metric": "wanda", "sparsity": 0.7}})
        masks[label] = counter.kept
        assert result.info["prune.achieved_sparsity"] == pytest.approx(0.7, abs=1e-3)
        assert all(torch.equal(before[n], p) for n, p in tiny_context.model.state_dict().items())
    first, last = tiny_context.layout.linears[0], tiny_context.layout.linears[-1]
    assert all(torch.equal(masks["dense-once"][name], masks["sequential"][name]) for name in first)  # same inputs
    assert not all(torch.equal(masks["dense-once"][name], masks["sequential"][name]) for name in last)


def test_cached_places_prune_exactly_what_per_row_selection_prunes(tiny_context):
    expected = {
        name: lowest_scores_mask(Wanda().score(linear.weight, tiny_context.stats[name]), 0.6, "row")
        for name, linear in tiny_context.layout.all_linears().items()
    }
    dense = {name: p.clone() for name, p in tiny_context.model.state_dict().items()}
    prune = tiny_context.registry.compressor("prune")
    for _ in range(2):  # the second trial reads the cached places
        journal = Journal()
        prune.apply(tiny_context, {"metric": "wanda", "sparsity": 0.6}, journal)
        for name, linear in tiny_context.layout.all_linears().items():
            assert torch.equal(linear.weight == 0, expected[name])
        assert journal.nbytes == 0  # undone from the snapshot file, not from memory
        journal.restore()
        assert all(torch.equal(dense[name], p) for name, p in tiny_context.model.state_dict().items())
    assert tiny_context.cache["prune.cached_ranks"].key == ("wanda", ())


class Reweigh(Compressor):
    """Changes the weights before prune does, as a compensation step would."""

    name = "reweigh"

    def apply(self, context, params, journal):
        generator = torch.Generator().manual_seed(0)
        for linear in context.layout.all_linears().values():
            factors = torch.rand(linear.weight.shape, generator=generator) + 0.5
            journal.overwrite(linear.weight, linear.weight * factors)
        return {}


def test_prune_after_another_compressor_ranks_the_changed_weights(tiny_context):
    prune = tiny_context.registry.compressor("prune")
    params = {"metric": "wanda", "sparsity": 0.5}
    run_trial(tiny_context, [prune], [], {"prune": params})  # the cache now holds the dense model's places
    dense = {name: p.clone() for name, p in tiny_context.model.state_dict().items()}
    journal = Journal()
    Reweigh().apply(tiny_context, {}, journal)
    changed = {name: linear.weight.clone() for name, linear in tiny_context.layout.all_linears().items()}
    prune.apply(tiny_context, params, journal)
    for name, linear in tiny_context.layout.all_linears().items():
        expected = lowest_scores_mask(Wanda().score(changed[name], tiny_context.stats[name]), 0.5, "row")
        assert torch.equal(linear.weight == 0, expected)
    journal.restore()
    assert all(torch.equal(dense[name], p) for name, p in tiny_context.model.state_dict().items())
