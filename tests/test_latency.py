"""The latency scorer times what runs: removed blocks make decoding faster, unstructured zeros do
not, a packed KV cache is what generation uses; its settings are checked; a study logs the dense
model's figures once and each trial's ratio to them.

Timings are compared as ratios measured side by side, interleaved, with the median of several
rounds, so other load on the machine moves both sides alike."""

from __future__ import annotations

import dataclasses
import statistics

import pytest
import torch
from cli_harness import run_cli
from test_study import runs_of

from autoprune.config import compose_config
from autoprune.errors import ConfigError
from autoprune.study import run_study
from autoprune.trial import run_trial
from autoprune_plugins.scorers.latency import Latency, _Clock, _generate
from conftest import study_overrides

ROUNDS = 3


def ratios(context, sample: dict, rounds: int = ROUNDS) -> list[float]:
    """The scorer's ratio to the dense model, each round measuring the dense model right before."""
    registry = context.registry
    scorer = Latency().bind({})
    compressors = [registry.compressor(name) for name in sample]
    for compressor in compressors:
        compressor.prepare(context, sample[compressor.name])
    found = []
    for _ in range(rounds):
        scorer.prepare(context)
        found.append(run_trial(context, compressors, [scorer], sample).info["latency.ratio"])
    return found


@pytest.fixture
def context(tiny_context):
    return dataclasses.replace(tiny_context, cache={})


def test_the_timed_loop_generates_what_greedy_generate_does(tiny_context):
    model, windows = tiny_context.model, tiny_context.evaluation
    prompt = windows[:1, :64]
    *_, generated = _generate(model, prompt, 16, None, _Clock(torch.device("cpu")))
    expected = model.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert torch.equal(generated, expected[:, 64:])


def test_removing_blocks_lowers_decode_time_and_unstructured_sparsity_does_not(context):
    removed = statistics.median(ratios(context, {"remove_layers": {"count": 3}}))
    sparse = ratios(context, {"prune": {"metric": "magnitude", "sparsity": 0.5}})
    assert removed < 0.85  # half the blocks gone: the embedding and head stay, so not 0.5
    # 50 % zeros in dense matrices cost what the dense ones do: within the noise of dense vs dense
    spread = max(0.1, max(sparse) - min(sparse))
    assert abs(statistics.median(sparse) - 1) <= spread, sparse


def test_a_packed_kv_cache_is_what_generation_uses(context):
    """Dequantizing every step costs time in plain torch: the 2-bit cache must show it."""
    packed = statistics.median(ratios(context, {"kv_cache": {"bits": 2, "group_size": 32, "residual": 0}}))
    assert packed > 1.15


def test_the_dense_model_is_timed_once_and_trials_report_a_ratio(tmp_path):
    overrides = [*study_overrides(tmp_path, name="latency", trials=2), "scorers=[perplexity,latency]"]
    overrides += ["baselines.allocations=[]", "+scoring.latency.repeats=5", "+scoring.latency.new_tokens=4"]
    run_study(compose_config(overrides))
    _, [parent], children = runs_of(tmp_path, "latency")
    assert parent.data.metrics["dense.latency_ms"] == parent.data.metrics["dense.decode_ms"] > 0
    assert int(parent.data.tags["autoprune.threads"]) == torch.get_num_threads()
    for child in children:
        metrics = child.data.metrics
        assert metrics["latency_ms"] == metrics["latency.decode_ms"]
        assert metrics["latency.ratio"] == pytest.approx(
            metrics["latency_ms"] / parent.data.metrics["dense.latency_ms"]
        )
        assert metrics["latency.decode_iqr_ms"] >= 0 and metrics["latency.prefill_ms"] > 0


def test_prefill_can_be_the_objective(context):
    scorer = Latency().bind({"measure": "prefill", "new_tokens": 2})
    values = scorer.score(context)
    assert values["latency_ms"] == values["prefill_ms"] != values["decode_ms"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+scoring.latency.repeats=3", "scoring.latency: repeats is 3; use a whole number from 5 to 10000"),
        ("+scoring.latency.measure=ttft", "scoring.latency: measure is 'ttft'; use one of decode, prefill"),
        ("+scoring.latency.prompt_tokens=0", "scoring.latency: prompt_tokens is 0; use a whole number from 1"),
        ("+scoring.latency.new_tokens=1.5", "scoring.latency: new_tokens is 1.5; use a whole number from 2"),
        (
            "+scoring.latency.tokens=8",
            "unknown key 'tokens'; did you mean new_tokens? the latency scorer takes: measure, new_tokens",
        ),
    ],
)
def test_bad_settings_are_one_line_before_compute(tmp_path, override, message):
    outcome = run_cli(["scorers=[perplexity,latency]", "+scoring.latency.warmup=1", override], tmp_path)
    assert outcome.code == 2 and outcome.created == []
    [line] = outcome.stderr.splitlines()
    assert message in line


def test_a_generation_longer_than_the_model_is_refused_before_trials(context):
    with pytest.raises(ConfigError, match="prompt_tokens is 200, longer than the 128-token evaluation windows"):
        Latency().bind({"prompt_tokens": 200}).prepare(context)
    with pytest.raises(ConfigError, match="prompt_tokens \\+ new_tokens is 136, more than the model's 128 positions"):
        Latency().bind({"prompt_tokens": 120, "new_tokens": 16}).prepare(context)
