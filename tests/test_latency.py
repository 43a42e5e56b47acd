"""The latency scorer times what runs: removed blocks make decoding faster, unstructured zeros do
not, the packed KV cache is what generation fills (and it costs time); its settings are checked;
a study logs the dense model's figures once and each trial's ratio to them.

Timings are compared as ratios measured side by side: each round times the dense model right
before the compressed one, the median of several rounds is compared, and the timing tests run on
one thread, so other load on the machine slows both sides alike instead of stalling one of them."""

from __future__ import annotations

import dataclasses
import statistics

import pytest
import torch
from cli_harness import run_cli
from test_study import runs_of

from autoprune.config import compose_config
from autoprune.errors import ConfigError
from autoprune.journal import Journal
from autoprune.study import run_study
from autoprune.trial import run_trial
from autoprune_plugins.compressors.kv_cache.cache import PackedCache
from autoprune_plugins.scorers.latency import Clock, Latency, timed_generation
from conftest import study_overrides

ROUNDS = 3
TWO_BIT = {"kv_cache": {"bits": 2, "group_size": 32, "residual": 0}}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def context(tiny_context):
    """The shared embedded-model context with a cache of its own (the scorer keeps the dense timing there)."""
    return dataclasses.replace(tiny_context, cache={})


def rounds(context, sample: dict) -> list[dict[str, float]]:
    """The scorer's figures for one trial of `sample`, each round timing the dense model right before."""
    scorer = Latency().bind({})
    compressors = [context.registry.compressor(name) for name in sample]
    for compressor in compressors:
        compressor.prepare(context, sample[compressor.name])
    found = []
    for _ in range(ROUNDS):
        dense = scorer.prepare(context)
        info = run_trial(context, compressors, [scorer], sample).info
        spread = info["latency.decode_iqr_ms"] / info["latency.decode_ms"] + dense["decode_iqr_ms"] / dense["decode_ms"]
        found.append({"ratio": info["latency.decode_ratio"], "spread": spread})
    return found


def median(figures: list[dict[str, float]], key: str) -> float:
    return statistics.median(figure[key] for figure in figures)


def test_the_timed_loop_generates_what_greedy_generate_does(tiny_context):
    model, windows = tiny_context.model, tiny_context.evaluation
    prompt = windows[:1, :64]
    *_, generated = timed_generation(model, prompt, 16, None, Clock(torch.device("cpu")))
    expected = model.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert torch.equal(generated, expected[:, 64:])


def test_removing_blocks_lowers_decode_time_and_unstructured_sparsity_does_not(context, one_thread):
    removed = rounds(context, {"remove_layers": {"count": 3}})
    sparse = rounds(context, {"prune": {"metric": "wanda", "sparsity": 0.5}})
    assert median(removed, "ratio") < 0.85, removed  # half the blocks gone; the embeddings and head stay
    # 50 % zeros in dense matrices cost what the dense ones do: no closer to the removed blocks' time,
    # and off the dense time by no more than the two measurements' spread
    assert median(sparse, "ratio") > median(removed, "ratio") + 0.1, (sparse, removed)
    assert abs(median(sparse, "ratio") - 1) <= max(0.15, median(sparse, "spread")), sparse


def test_generation_fills_the_packed_kv_cache_and_pays_for_it(context, one_thread):
    scorer = Latency().bind({"new_tokens": 4})
    journal = Journal()
    made: list = []
    try:
        context.registry.compressor("kv_cache").apply(context, TWO_BIT["kv_cache"], journal)
        packed = context.runtime.new_cache

        def recorded() -> PackedCache:
            made.append(packed())
            return made[-1]

        context.runtime.set(journal, new_cache=recorded)
        scorer.score(context)
    finally:
        journal.restore()
    assert len({id(cache) for cache in made}) == len(made) == 1 + 5  # a fresh one per warm-up and repeat
    for cache in made:
        assert isinstance(cache, PackedCache) and cache.get_seq_length() == 64 + 4 - 1
        assert {layer.key_stream.quantized for layer in cache.layers} == {64}  # two 2-bit groups of 32
    assert context.runtime.new_cache is None  # the trial's cache is gone with the trial
    # dequantizing the cache at every step costs time in plain torch
    assert median(rounds(context, TWO_BIT), "ratio") > 1.15


def test_the_dense_model_is_timed_once_and_trials_report_their_ratio(tmp_path, one_thread):
    overrides = [*study_overrides(tmp_path, name="latency", trials=2), "scorers=[perplexity,latency]"]
    overrides += ["baselines.allocations=[]", "+scoring.latency.new_tokens=4"]
    run_study(compose_config(overrides))
    _, [parent], children = runs_of(tmp_path, "latency")
    dense = parent.data.metrics
    assert dense["dense.latency_ms"] == dense["dense.decode_ms"] > 0 and dense["dense.prefill_iqr_ms"] >= 0
    assert int(parent.data.tags["autoprune.threads"]) == torch.get_num_threads()
    assert len(children) == 2
    for child in children:
        metrics = child.data.metrics
        assert metrics["latency_ms"] == metrics["latency.decode_ms"]
        for measure in ("decode", "prefill"):
            assert metrics[f"latency.{measure}_ratio"] == pytest.approx(
                metrics[f"latency.{measure}_ms"] / dense[f"dense.{measure}_ms"]
            )
            assert metrics[f"latency.{measure}_iqr_ms"] >= 0


def test_prefill_can_be_the_objective(context, one_thread):
    scorer = Latency().bind({"measure": "prefill", "new_tokens": 2})
    assert scorer.objectives == {"latency_ms": "minimize"}
    values = scorer.score(context)
    assert values["latency_ms"] == values["prefill_ms"] != values["decode_ms"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+scoring.latency.repeats=3", "scoring.latency: repeats is 3; use a whole number from 5 to 10000"),
        ("+scoring.latency.measure=ttft", "scoring.latency: measure is 'ttft'; use one of decode, prefill"),
        ("+scoring.latency.prompt_tokens=0", "scoring.latency: prompt_tokens is 0; use a whole number from 1"),
        ("+scoring.latency.new_tokens=1.5", "scoring.latency: new_tokens is 1.5; use a whole number from 2"),
        ("+scoring.latency.warmup=true", "scoring.latency: warmup is True; use a whole number from 0"),
        (
            "+scoring.latency.tokens=8",
            "unknown key 'tokens'; did you mean new_tokens? the latency scorer takes: measure, new_tokens",
        ),
    ],
)
def test_bad_settings_are_one_line_before_compute(tmp_path, override, message):
    outcome = run_cli(["scorers=[perplexity,latency]", override], tmp_path)
    assert outcome.code == 2 and outcome.created == []
    [line] = outcome.stderr.splitlines()
    assert message in line


def test_a_generation_longer_than_the_model_is_refused_before_timing(context):
    with pytest.raises(ConfigError, match="prompt_tokens is 200, longer than the 128-token evaluation windows"):
        Latency().bind({"prompt_tokens": 200}).prepare(context)
    with pytest.raises(ConfigError, match="prompt_tokens \\+ new_tokens is 136, more than the model's 128 positions"):
        Latency().bind({"prompt_tokens": 120, "new_tokens": 16}).prepare(context)
    assert "latency.dense" not in context.cache
