"""The KV cache compressor: KIVI quantization, the accuracy path every scorer sees, and the packed
cache `generate()` runs with, on the embedded OPT and on a random Llama with grouped-query attention."""

import copy
import dataclasses

import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from autoprune.context import StudyContext
from autoprune.errors import ConfigError
from autoprune.journal import Journal
from autoprune.model import decoder_layout
from autoprune.runtime import cache_keyword, plain_cache_bytes
from autoprune.space import SearchSpace
from autoprune.trial import run_trial
from autoprune_plugins.compressors.kv_cache.attention import SPEC
from autoprune_plugins.compressors.kv_cache.cache import PackedCache
from autoprune_plugins.compressors.kv_cache.compressor import KVCache, attention_modules
from autoprune_plugins.compressors.kv_cache.quantizer import (
    BITS,
    fake_quantize_keys,
    fake_quantize_values,
    pack,
    packed_bytes,
    quantize,
    quantized_tokens,
    unpack,
)
from autoprune_plugins.compressors.remove_layers import RemoveLayers

PER_LAYER = {"choices": [2, 4, 16], "per_layer": True}
ALL_4_BITS = {f"kv_cache.key_bits.{layer}": 4 for layer in range(6)}
MIXED = {"key_bits": [2, 3, 4, 6, 8, 16], "value_bits": [3, 2, 6, 4, 16, 8], "group_size": 16, "residual": 16}


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    """A random Llama with grouped-query attention (4 query heads share 2 key/value heads)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval()


def context_for(model: torch.nn.Module) -> StudyContext:
    windows = torch.zeros(1, 128, dtype=torch.long)
    return StudyContext(model, None, decoder_layout(model), windows, windows, {}, None)


def mixed(context: StudyContext) -> dict:
    blocks = len(context.layout)
    return {**MIXED, "key_bits": MIXED["key_bits"][:blocks], "value_bits": MIXED["value_bits"][:blocks]}


def batch(vocab: int, padded: bool, length: int = 96) -> tuple[torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (2, length), generator=generator)
    if not padded:
        return ids, None
    mask = torch.ones_like(ids)
    mask[0, :11] = 0  # left padding, as generate() pads
    return ids, mask


@given(bits=st.sampled_from([b for b in BITS if b < 16]), count=st.integers(0, 200))
@settings(max_examples=40, deadline=None)
def test_packing_is_exact_width_and_lossless(bits, count):
    codes = torch.randint(0, 2**bits, (count,), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.numel() == packed_bytes(count, bits)
    assert packed.numel() * 8 - count * bits < 8 * packed_bytes(1, bits)  # padding: less than one run of codes
    assert torch.equal(unpack(packed, bits, count), codes)
    if count % 8 == 0:
        assert packed.numel() == count * bits // 8


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_quantization_error_is_at_most_half_a_step_per_group(bits):
    x = torch.randn(2, 3, 64, 32) * torch.linspace(0.1, 5, 32)  # outlier channels, as keys have
    for dim, reshaped in ((3, x.reshape(2, 3, 4, 16, 32)), (4, x.reshape(2, 3, 64, 2, 16))):
        codes, scale, zero = quantize(reshaped, bits, dim)
        restored = codes.float() * scale.float() + zero.float()
        assert (restored - reshaped).abs().le(scale.float() / 2 + 1e-3).all()
    keys = fake_quantize_keys(x, bits, 16)
    assert torch.equal(keys[:, :, :16], fake_quantize_keys(x[:, :, :16], bits, 16))  # a group is quantized alone
    values = fake_quantize_values(x, bits, 16)
    assert torch.equal(values[:, :, 5:9], fake_quantize_values(x[:, :, 5:9], bits, 16))


def test_the_newest_tokens_stay_in_full_precision():
    assert [quantized_tokens(t, 32, 128) for t in (0, 128, 159, 160, 191, 192)] == [0, 0, 0, 32, 32, 64]
    assert [quantized_tokens(t, 16, 0) for t in (15, 16, 31, 32)] == [0, 16, 16, 32]
    for tokens in range(300):
        kept = tokens - quantized_tokens(tokens, 32, 100)
        assert kept == tokens or 100 <= kept < 132


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("which", ["opt", "llama"])
def test_at_16_bits_the_logits_are_bit_identical(tiny, llama, which, padded):
    model = tiny[0] if which == "opt" else llama
    ids, mask = batch(model.config.vocab_size, padded)
    context = context_for(model)
    with torch.no_grad():
        dense = model(ids, attention_mask=mask).logits
        journal = Journal()
        KVCache().apply(context, {"bits": 16, "group_size": 16, "residual": 0}, journal)
        assert model.config._attn_implementation == "autoprune_kivi"
        full = model(ids, attention_mask=mask).logits
        journal.restore()
    assert torch.equal(full, dense)


def test_quantize_false_leaves_the_model_and_its_cache_as_transformers_runs_them(tiny):
    """The joint space's switch: with quantize false the bits are not even sampled, and the
    trial's model keeps transformers' attention and default cache, at full precision."""
    model = tiny[0]
    ids, _ = batch(model.config.vocab_size, False)
    context = context_for(model)
    base = model.config._attn_implementation
    with torch.no_grad():
        dense = model(ids).logits
        journal = Journal()
        info = KVCache().apply(context, {"quantize": False, "key_bits": 2, "value_bits": 2}, journal)
        assert model.config._attn_implementation == base and context.runtime.new_cache is None
        assert context.kv_cache_bytes(128, 1) == plain_cache_bytes(model, context.layout, 128, 1)
        assert torch.equal(model(ids).logits, dense)
        journal.restore()
    assert info["key_bits"] == info["value_bits"] == [16] * len(context.layout)
    space = SearchSpace.parse(
        {"kv_cache": {"quantize": {"choices": [False, True]}, "key_bits": {**PER_LAYER, "when": {"quantize": [True]}}}}
    )
    for switch in (False, True):
        sample = space.sample(optuna.trial.FixedTrial({"kv_cache.quantize": switch, **ALL_4_BITS}), {"kv_cache": 6})
        assert ("key_bits" in sample["kv_cache"]) is switch


@pytest.mark.parametrize("which", ["opt", "llama"])
def test_quantized_attention_is_causal(tiny, llama, which):
    """Changing later tokens changes nothing before them: no query sees later tokens' statistics."""
    model = tiny[0] if which == "opt" else llama
    ids, _ = batch(model.config.vocab_size, False)
    changed = ids.clone()
    changed[:, 70:] = (changed[:, 70:] + 7) % model.config.vocab_size
    context = context_for(model)
    journal = Journal()
    with torch.no_grad():
        dense = model(ids).logits
        KVCache().apply(context, {"bits": 2, "group_size": 16, "residual": 16}, journal)
        before, after = model(ids).logits, model(changed).logits
        journal.restore()
    assert torch.equal(before[:, :70], after[:, :70])
    assert not torch.allclose(before[:, 40:], dense[:, 40:], atol=1e-4)  # quantized from the first full group on
    assert torch.equal(before[:, :31], dense[:, :31])  # before any group leaves the residual window


@pytest.mark.parametrize("which", ["opt", "llama"])
def test_decoding_through_the_packed_cache_gives_the_accuracy_paths_logits(tiny, llama, which):
    """In float64, so that the last-bit differences between a one-token and a whole-window matmul
    (which can round a value to the neighbouring code in float32) do not hide a real mismatch."""
    model = (tiny[0] if which == "opt" else llama).double()
    try:
        ids, _ = batch(model.config.vocab_size, False)
        context = context_for(model)
        journal = Journal()
        with torch.no_grad():
            KVCache().apply(context, mixed(context), journal)
            window = model(ids).logits
            cache = context.runtime.new_cache()
            one_by_one = torch.cat(
                [model(ids[:, t : t + 1], **{cache_keyword(model): cache}).logits for t in range(96)], 1
            )
            cache = context.runtime.new_cache()
            prompt = model(ids[:, :41], **{cache_keyword(model): cache}).logits  # a prompt, then decoding
            rest = [model(ids[:, t : t + 1], **{cache_keyword(model): cache}).logits for t in range(41, 96)]
            journal.restore()
        assert (one_by_one - window).abs().max() < 1e-4
        assert (torch.cat([prompt, *rest], 1) - window).abs().max() < 1e-4
    finally:
        model.float()


@pytest.mark.parametrize("which", ["opt", "llama"])
def test_at_16_bits_greedy_generation_equals_the_default_caches(tiny, llama, which):
    model = tiny[0] if which == "opt" else llama
    ids, mask = batch(model.config.vocab_size, True, length=24)
    context = context_for(model)
    journal = Journal()
    options = {"max_new_tokens": 40, "do_sample": False, "attention_mask": mask, "pad_token_id": 0}
    with torch.no_grad():
        default = model.generate(ids, **{cache_keyword(model): DynamicCache()}, **options)
        KVCache().apply(context, {"bits": 16, "group_size": 16, "residual": 16}, journal)
        cache = context.runtime.new_cache()
        assert isinstance(cache, PackedCache)
        packed = model.generate(ids, **{cache_keyword(model): cache}, **options)
        journal.restore()
    assert torch.equal(packed, default)
    assert cache.get_seq_length() == 24 + 40 - 1


def test_the_cache_holds_what_the_objective_counts_and_what_the_formula_says(tiny):
    """Bytes of the real cache's tensors = the sizing the objectives use; and the DESIGN.md formula,
    2·heads·head_dim·[(T−R)·(b + 32/G)/8 + 2R] per layer and sequence, for a 16-bit model."""
    model = copy.deepcopy(tiny[0]).to(torch.bfloat16)  # a copy: bfloat16 and back would round the shared one
    context = context_for(model)
    heads, head_dim, blocks = 4, 64, 6
    for bits in (2, 3, 4, 6, 8):
        group, residual, tokens = 32, 16, 16 + 3 * 32
        journal = Journal()
        with torch.no_grad():
            KVCache().apply(context, {"bits": bits, "group_size": group, "residual": residual}, journal)
            cache = context.runtime.new_cache()
            model(torch.randint(3, 4096, (2, tokens)), **{cache_keyword(model): cache})
            sized = context.kv_cache_bytes(tokens, 2)
            journal.restore()
        formula = blocks * 2 * 2 * heads * head_dim * ((tokens - residual) * (bits + 32 / group) / 8 + 2 * residual)
        assert cache.nbytes == sized
        assert sized == pytest.approx(formula, rel=0.05)
    assert context.kv_cache_bytes(tokens, 2) == 2 * blocks * 2 * tokens * heads * head_dim * 2  # restored: plain


def test_composes_with_pruning_and_layer_removal_and_is_undone(tiny_context):
    """Bits are keyed by the dense numbering; a removed block 0 leaves the cache's layer 0 empty."""
    context = dataclasses.replace(tiny_context, cache={})
    RemoveLayers().prepare(context, {"count": 1})
    influence = context.cache["remove_layers.profile"].influence
    removed = min(range(6), key=lambda i: influence[i])
    model, registry = context.model, context.registry
    dense = {name: p.clone() for name, p in model.state_dict().items()}
    ids = context.evaluation[:1, :20]
    with torch.no_grad():
        dense_logits = model(context.evaluation[:2]).logits
    params = {
        "remove_layers": {"count": 1, "compensate": False},
        "prune": {"metric": "wanda", "sparsity": 0.5, "allocation": "uniform"},
        "kv_cache": {"key_bits": [2, 4, 8, 16, 3, 6], "value_bits": 4, "group_size": 16, "residual": 16},
    }
    seen = {}

    class Probe:  # a scorer that looks at the model the way any scorer would
        name, objectives = "probe", {"probe": "minimize"}

        def score(self, context):
            cache = context.runtime.new_cache()
            seen["tokens"] = model.generate(ids, **{cache_keyword(model): cache}, max_new_tokens=12, do_sample=False)
            seen["used"] = [i for i, layer in enumerate(cache.layers) if layer.is_initialized]
            seen["bytes"] = (cache.nbytes, context.kv_cache_bytes(cache.get_seq_length(), 1))
            seen["specs"] = {m.layer_idx: getattr(m, SPEC) for b in context.layout.blocks for m in attention_modules(b)}
            return {"probe": 0.0}

    compressors = [registry.compressor(name) for name in params]
    result = run_trial(context, compressors, [Probe()], params)
    assert seen["used"] == [i for i in range(6) if i != removed]
    assert seen["bytes"][0] == seen["bytes"][1]
    assert {i: spec.key_bits for i, spec in seen["specs"].items()} == {
        i: bits for i, bits in enumerate(params["kv_cache"]["key_bits"]) if i != removed
    }
    assert result.info["kv_cache.key_bits"] == [b for i, b in enumerate(params["kv_cache"]["key_bits"]) if i != removed]
    assert seen["tokens"].shape == (1, 32)
    # everything undone: weights, blocks, attention function, per-module settings, runtime
    assert all(torch.equal(dense[name], p) for name, p in model.state_dict().items())
    assert model.config._attn_implementation == "sdpa"
    assert not any(hasattr(m, SPEC) for m in model.modules())
    assert context.runtime.new_cache is None and context.runtime.cache_bytes is None
    assert "kv_cache" not in context.runtime.settings
    with torch.no_grad():
        assert torch.equal(model(context.evaluation[:2]).logits, dense_logits)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"group_size": 16}, "sets no bits"),
        ({"bits": 5}, "bits must be one of"),
        ({"key_bits": {"choices": [2, 4, 7]}, "value_bits": 4}, "offers 7"),
        ({"key_bits": {"low": 2, "high": 8}, "value_bits": 4}, "constant or {choices"),
        ({"bits": 4, "key_bits": 2}, "drop bits"),
        ({"bits": True}, "bits must be one of"),
        ({"bits": 4, "group_size": 0}, "whole numbers >= 1"),
        ({"bits": 4, "residual": -1}, "whole numbers >= 0"),
        ({"bits": 4, "residual": {"choices": [0, 16], "per_layer": True}}, "drop per_layer"),
    ],
)
def test_bad_sections_are_refused_with_the_fix(section, message):
    with pytest.raises(ConfigError, match=message):
        KVCache().check(section, None)


def test_group_sizes_that_do_not_divide_the_head_are_refused_before_the_model_loads():
    with pytest.raises(ConfigError, match="does not divide the model's head_dim 64"):
        KVCache().check_model({"bits": 4, "group_size": 48}, {"num_attention_heads": 4, "hidden_size": 256})
    KVCache().check_model(
        {"bits": 4, "group_size": {"choices": [16, 32]}}, {"num_attention_heads": 4, "hidden_size": 256}
    )


def test_generate_works_when_block_0_is_gone(tiny_context):
    """`generate()` reads lengths from layer 0; with block 0 removed the packed cache answers from a
    layer in use, so greedy tokens equal those of recomputing every step without a cache."""
    context = dataclasses.replace(tiny_context, cache={})
    model, ids = context.model, context.evaluation[:1, :20]
    journal = Journal()
    RemoveLayers()._remove(context, {0}, journal)
    KVCache().apply(context, {"bits": 16, "group_size": 16, "residual": 16}, journal)
    options = {"max_new_tokens": 30, "do_sample": False}
    with torch.no_grad():
        cache = context.runtime.new_cache()
        packed = model.generate(ids, **{cache_keyword(model): cache}, **options)
        recomputed = model.generate(ids, use_cache=False, **options)
    journal.restore()
    assert not cache.layers[0].is_initialized and cache.get_seq_length() == 49
    assert torch.equal(packed, recomputed)


@pytest.mark.parametrize("which", ["opt", "llama"])
def test_quantized_padded_batches_stay_finite_and_rows_independent(tiny, llama, which):
    model = tiny[0] if which == "opt" else llama
    ids, mask = batch(model.config.vocab_size, True)
    mask[0, :40] = 0  # whole groups of padding, so some groups hold only padding
    context = context_for(model)
    journal = Journal()
    other, other_mask = ids.clone(), mask.clone()
    other[0], other_mask[0, :40] = (ids[0] + 7) % model.config.vocab_size, 1  # row 0: other tokens, other padding
    with torch.no_grad():
        KVCache().apply(context, {"bits": 2, "group_size": 16, "residual": 0}, journal)
        padded, beside_other = model(ids, attention_mask=mask).logits, model(other, attention_mask=other_mask).logits
        alone = model(ids[1:]).logits
        journal.restore()
    assert torch.isfinite(padded[0, 40:]).all() and torch.isfinite(padded[1]).all()
    # Row 1 sees nothing of row 0. Compared with row 1 run alone, a batch's kernels may round the
    # last bit differently, which 2-bit codes can turn into a neighbouring code: close, not equal.
    assert torch.equal(padded[1], beside_other[1])
    assert (padded[1] - alone[0]).abs().max() < 1e-2
