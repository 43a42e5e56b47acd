"""Layer removal: block influence as ShortGPT defines it, blocks really gone, compensation folded exactly."""

import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from autoprune.calibration import BlockInputs
from autoprune.context import StudyContext
from autoprune.errors import ConfigError
from autoprune.journal import Journal
from autoprune.model import decoder_layout
from autoprune.trial import run_trial
from autoprune_plugins.compressors.remove_layers import RemoveLayers, profile_blocks, residual_writers
from autoprune_plugins.scorers.perplexity import perplexity


def fresh(context: StudyContext) -> StudyContext:
    """The same model and data with an empty study cache, so the profile is measured anew."""
    return dataclasses.replace(context, cache={})


def prepared(context: StudyContext) -> StudyContext:
    """A fresh context on which remove_layers has profiled the dense model, as a study does first."""
    context = fresh(context)
    RemoveLayers().prepare(context, {"count": {"low": 0, "high": 2}})
    return context


def test_block_influence_and_gap_match_the_hidden_states(tiny_context):
    profile = profile_blocks(tiny_context)
    with torch.no_grad():
        states = tiny_context.model(tiny_context.calibration, output_hidden_states=True, use_cache=False).hidden_states
    n = len(tiny_context.layout)
    # hidden_states[l] is block l's input for l < n; the last entry has the final norm applied, so use a hook there
    for index in range(n - 1):
        before, after = states[index], states[index + 1]
        cos = torch.nn.functional.cosine_similarity(before, after, dim=-1).mean()
        assert profile.influence[index] == pytest.approx(1 - float(cos), abs=1e-5)
        gap = after.norm(dim=-1).mean() / before.norm(dim=-1).mean()
        assert profile.gap[index] == pytest.approx(float(gap), rel=1e-5)


def test_residual_writers_are_found_without_names_per_architecture(tiny_context):
    call = BlockInputs(tiny_context.model, tiny_context.layout, tiny_context.calibration[:1]).calls[0]
    assert residual_writers(tiny_context.layout, call) == ["self_attn.out_proj", "fc2"]
    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    ).eval()
    layout = decoder_layout(llama)
    call = BlockInputs(llama, layout, torch.randint(0, 64, (1, 16))).calls[0]
    assert residual_writers(layout, call) == ["self_attn.o_proj", "mlp.down_proj"]


def test_residual_writers_are_found_in_half_precision_too(tiny_context):
    import copy

    model = copy.deepcopy(tiny_context.model).to(torch.bfloat16)
    layout = decoder_layout(model)
    call = BlockInputs(model, layout, tiny_context.calibration[:1]).calls[0]
    assert residual_writers(layout, call) == ["self_attn.out_proj", "fc2"]


def test_removed_blocks_are_gone_and_come_back(tiny_context):
    context = prepared(tiny_context)
    model = context.model
    dense = {name: p.clone() for name, p in model.state_dict().items()}
    size = context.registry.scorer("size")
    dense_size = size.score(context)["size_mb"]
    journal = Journal()
    info = RemoveLayers().apply(context, {"count": 2, "compensate": False}, journal)
    profile = context.cache["remove_layers.profile"]
    lowest = sorted(range(6), key=lambda i: profile.influence[i])[:2]
    assert [i for i, flag in enumerate(info["removed"]) if flag] == sorted(lowest)
    assert len(model.model.decoder.layers) == 4 and len(context.layout) == 4
    assert context.layout.slots == [i for i in range(6) if i not in lowest]
    assert size.score(context)["size_mb"] < dense_size * 0.75  # the scorers see fewer layers
    assert torch.isfinite(torch.tensor(perplexity(model, context.evaluation[:2])))
    journal.restore()
    assert len(model.model.decoder.layers) == 6 and len(context.layout) == 6
    assert all(torch.equal(dense[name], p) for name, p in model.state_dict().items())


def test_compensation_equals_rescaling_the_stream_where_the_block_was(tiny_context):
    context = prepared(tiny_context)
    model, windows = context.model, context.evaluation[:2]
    journal = Journal()
    RemoveLayers().apply(context, {"count": 1, "compensate": False}, journal)
    removed = next(i for i in range(6) if i not in context.layout.slots)
    gap = context.cache["remove_layers.profile"].gap[removed]
    after = context.layout.blocks[removed] if removed < 5 else None
    scale = after.register_forward_pre_hook(lambda module, args: (args[0] * gap, *args[1:])) if after else None
    with torch.no_grad():
        rescaled = model(windows, use_cache=False).logits
    if scale:
        scale.remove()
    journal.restore()
    RemoveLayers().apply(context, {"count": 1, "compensate": True}, journal)
    with torch.no_grad():
        compensated = model(windows, use_cache=False).logits
    journal.restore()
    assert torch.allclose(compensated, rescaled, atol=1e-3, rtol=1e-3)
    with torch.no_grad():
        dense = model(windows, use_cache=False).logits
    assert not torch.allclose(compensated, dense, atol=1e-2)


def test_prune_after_removal_prunes_the_remaining_blocks(tiny_context):
    context = prepared(tiny_context)
    dense = {name: p.clone() for name, p in context.model.state_dict().items()}
    params = {
        "remove_layers": {"count": 1, "compensate": True},
        "prune": {"metric": "wanda", "sparsity": 0.5, "allocation": "owl"},
    }
    registry = context.registry
    result = run_trial(
        context, [registry.compressor("remove_layers"), registry.compressor("prune")], [registry.scorer("size")], params
    )
    assert len(result.info["prune.ratio"]) == 5
    # each row prunes floor(ratio · columns): within one weight per row (of at least 256) of the mean
    assert result.info["prune.achieved_sparsity"] == pytest.approx(0.5, abs=1 / 256)
    assert sum(result.info["remove_layers.removed"]) == 1
    assert all(torch.equal(dense[name], p) for name, p in context.model.state_dict().items())


def test_bad_counts_and_order_are_refused(tiny_context):
    remove = RemoveLayers()
    with pytest.raises(ConfigError, match="whole numbers"):
        remove.check({"count": 1.5}, tiny_context.registry)
    remove.check({"count": {"choices": [0, 1, 2]}, "compensate": {"choices": [True, False]}}, tiny_context.registry)
    with pytest.raises(ConfigError, match="goes up to 6, but the model has only 6 blocks"):
        remove.prepare(fresh(tiny_context), {"count": {"low": 0, "high": 6}})


def test_removal_after_prune_ranks_the_dense_blocks_and_restores(tiny_context):
    context = prepared(tiny_context)
    dense = {name: p.clone() for name, p in context.model.state_dict().items()}
    registry = context.registry
    params = {"prune": {"metric": "wanda", "sparsity": 0.5}, "remove_layers": {"count": 2, "compensate": True}}
    result = run_trial(context, [registry.compressor("prune"), registry.compressor("remove_layers")], [], params)
    profile = context.cache["remove_layers.profile"]
    lowest = sorted(range(6), key=lambda i: profile.influence[i])[:2]
    assert [i for i, flag in enumerate(result.info["remove_layers.removed"]) if flag] == sorted(lowest)
    assert len(context.layout) == 6 and len(context.model.model.decoder.layers) == 6
    assert all(torch.equal(dense[name], p) for name, p in context.model.state_dict().items())


def test_owl_scores_the_dense_model_whatever_ran_before_prune(tiny_context):
    registry = tiny_context.registry
    remove, prune = registry.compressor("remove_layers"), registry.compressor("prune")
    section = {"metric": "wanda", "sparsity": 0.6, "allocation": "owl"}
    both = {"remove_layers": {"count": 1, "compensate": True}, "prune": section}
    ratios = []
    for first in ("removal", "prune alone"):
        context = prepared(tiny_context)
        prune.prepare(context, section)  # as a study does before its first trial
        if first == "prune alone":
            run_trial(context, [prune], [], {"prune": section})
        ratios.append(run_trial(context, [remove, prune], [], both).info["prune.ratio"])
    assert ratios[0] == ratios[1]
