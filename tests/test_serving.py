"""The serving shape and the memory objectives: the KV cache sized as transformers really holds it,
the kv_cache and memory scorers, and the `serving:` section from the config to the context."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
import torch
from torch import nn

from autoprune.builder import build_context
from autoprune.config import compose_config
from autoprune.context import Serving
from autoprune.journal import Journal
from autoprune.model import decoder_layout
from autoprune.plan import prepare
from autoprune.runtime import Runtime, plain_cache_bytes, returned_cache


def transformers_cache_bytes(model: nn.Module, tokens: int, batch: int) -> int:
    """Bytes of the DynamicCache a forward pass of `tokens` tokens for `batch` sequences leaves."""
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens))
    with torch.no_grad():
        cache = returned_cache(model(ids, use_cache=True))
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer.keys is not None)


def test_plain_cache_bytes_are_those_of_transformers_cache(tiny):
    model, _ = tiny
    layout = decoder_layout(model)
    assert plain_cache_bytes(model, layout, 40, 2) == transformers_cache_bytes(model, 40, 2)


def test_plain_cache_bytes_count_only_the_blocks_left(tiny):
    model, _ = tiny
    layout = decoder_layout(model)
    parent_name, _, attribute = layout.prefix.rpartition(".")
    parent = model.get_submodule(parent_name)
    dense = getattr(parent, attribute)
    setattr(parent, attribute, nn.ModuleList(block for index, block in enumerate(dense) if index != 2))
    try:
        held = transformers_cache_bytes(model, 40, 2)
    finally:
        setattr(parent, attribute, dense)
    assert plain_cache_bytes(model, layout.without({2}), 40, 2) == held
    assert held < plain_cache_bytes(model, layout, 40, 2)


def scored(context, name: str) -> float:
    scorer = context.registry.scorer(name)
    [objective] = scorer.objectives
    return scorer.score(context)[objective]


def test_the_serving_shape_defaults_to_one_evaluation_window(tiny_context):
    assert tiny_context.serving is None
    assert tiny_context.serving_shape() == (tiny_context.evaluation.shape[1], 1)
    serving = dataclasses.replace(tiny_context, serving=Serving(64, 4))
    assert serving.serving_shape() == (64, 4)


def test_memory_is_the_stored_weights_plus_the_kv_cache(tiny_context):
    context = dataclasses.replace(tiny_context, serving=Serving(100, 3), runtime=Runtime())
    kv_mb = scored(context, "kv_cache")
    assert kv_mb == plain_cache_bytes(context.model, context.layout, 100, 3) / 1e6
    assert scored(context, "memory") == pytest.approx(scored(context, "size") + kv_mb, rel=1e-12)


def test_the_memory_scorers_follow_the_runtime_cache_and_its_undo(tiny_context):
    context = dataclasses.replace(tiny_context, serving=Serving(100, 3), runtime=Runtime())
    plain_kv, plain_memory = scored(context, "kv_cache"), scored(context, "memory")
    journal = Journal()
    context.runtime.set(journal, cache_bytes=lambda tokens, batch: 1000 * tokens * batch)
    assert scored(context, "kv_cache") == 1000 * 100 * 3 / 1e6
    assert scored(context, "memory") == pytest.approx(plain_memory - plain_kv + 0.3, rel=1e-12)
    journal.restore()
    assert (scored(context, "kv_cache"), scored(context, "memory")) == (plain_kv, plain_memory)


def test_the_study_context_gets_the_serving_section(tmp_path):
    overrides = [f"calibration.cache_dir={tmp_path}", "data.calib_windows=1", "data.eval_windows=1"]
    overrides += ["+data.calibration.max_chars=20000", "+data.evaluation.max_chars=20000"]
    for serving, expected in (
        (["serving.batch_size=4"], Serving(128, 4)),
        (["serving.context_length=64"], Serving(64)),
    ):
        context = build_context(prepare(compose_config(overrides + serving)), defaultdict(list))
        assert context.serving == expected  # null context_length: the model's 128 positions
