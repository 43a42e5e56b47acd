"""Baselines: which fixed configurations a new study queues, and how they enter the space."""

import optuna

from autoprune.baselines import build_baselines
from autoprune.config import BaselinesConfig
from autoprune.space import SearchSpace

SEARCHED = {
    "metric": {"choices": ["magnitude", "wanda"]},
    "sparsity": {"low": 0.2, "high": 0.8},
    "allocation": "searched",
    "offsets": {"low": -0.1, "high": 0.1, "per_layer": True, "when": {"allocation": ["searched"]}},
}


def baselines_of(section, **settings):
    return build_baselines(SearchSpace.parse({"prune": section}), BaselinesConfig(**settings))


def test_each_allocation_metric_and_sparsity_once():
    baselines = baselines_of(SEARCHED)
    assert [b.name for b in baselines] == [
        f"{allocation} {metric} {s}"
        for s in ("0.5", "0.7")
        for allocation in ("uniform", "owl")
        for metric in ("magnitude", "wanda")
    ]
    owl = baselines[2]
    assert owl.params == {"prune.metric": "magnitude", "prune.sparsity": 0.5}  # sampled: enqueued in Optuna
    assert owl.overrides == {"prune": {"allocation": "owl", "pattern": "unstructured"}}  # constants: overridden


def test_the_overridden_allocation_is_not_sampled_with_searched_offsets():
    space = SearchSpace.parse({"prune": SEARCHED})
    owl = baselines_of(SEARCHED)[2]
    study = optuna.create_study()
    study.enqueue_trial(owl.params)
    trial = study.ask()
    sample = space.sample(trial, {"prune": 6}, owl.overrides)["prune"]
    assert sample["allocation"] == "owl" and "offsets" not in sample
    assert sample["metric"] == "magnitude" and sample["sparsity"] == 0.5
    assert set(trial.params) == {"prune.metric", "prune.sparsity"}


def test_a_constant_sparsity_is_the_baseline_sparsity():
    section = {**SEARCHED, "sparsity": 0.6}
    assert {b.name for b in baselines_of(section, allocations=["uniform"])} == {
        "uniform magnitude 0.6",
        "uniform wanda 0.6",
    }


def test_baselines_outside_the_space_are_skipped():
    narrow = {**SEARCHED, "sparsity": {"low": 0.2, "high": 0.6}}
    assert {b.name.split()[-1] for b in baselines_of(narrow)} == {"0.5"}
    sampled_allocation = {**SEARCHED, "allocation": {"choices": ["searched", "owl"]}}
    names = [b.name for b in baselines_of(sampled_allocation)]
    assert names and all(name.startswith("owl") for name in names)
    assert baselines_of(sampled_allocation)[0].params["prune.allocation"] == "owl"


def test_n_of_m_spaces_have_no_allocation_baselines():
    assert baselines_of({**SEARCHED, "pattern": "2:4"}) == []
    mixed = baselines_of({**SEARCHED, "pattern": {"choices": ["unstructured", "2:4"]}})
    assert mixed and all(b.params["prune.pattern"] == "unstructured" for b in mixed)


def test_no_baselines_when_turned_off():
    assert baselines_of(SEARCHED, allocations=[]) == []


# --- uniform KV-cache baselines: the kv_cache compressor alone, every layer at one width ---

PER_LAYER_BITS = {"choices": [2, 3, 4, 6, 8, 16], "per_layer": True}
KV = {"key_bits": PER_LAYER_BITS, "value_bits": PER_LAYER_BITS, "group_size": 16, "residual": 16}


def kv_baselines_of(section, **settings):
    return build_baselines(SearchSpace.parse({"kv_cache": section}), BaselinesConfig(**settings))


def test_a_kv_cache_section_adds_one_uniform_kv_baseline_per_width_after_the_prune_ones():
    baselines = build_baselines(SearchSpace.parse({"prune": SEARCHED, "kv_cache": KV}), BaselinesConfig())
    assert [b.name for b in baselines[-2:]] == ["uniform KV 4-bit", "uniform KV 2-bit"]
    assert len(baselines) == len(baselines_of(SEARCHED)) + 2
    four = baselines[-2]
    assert four.params == {}  # per-layer families: fixed by overrides when the model's length is unknown
    assert four.overrides == {"kv_cache": {"key_bits": 4, "value_bits": 4}}


def test_with_the_number_of_blocks_known_per_layer_bits_are_enqueued_so_the_sampler_learns_them():
    space = SearchSpace.parse({"prune": SEARCHED, "kv_cache": KV})
    [four] = [b for b in build_baselines(space, BaselinesConfig(), blocks=6) if b.name == "uniform KV 4-bit"]
    assert four.overrides == {"kv_cache": {}}
    study = optuna.create_study()
    study.enqueue_trial(four.params)
    trial = study.ask()
    sample = space.sample(trial, {"prune": 6, "kv_cache": 6}, four.overrides)
    assert sample == {"kv_cache": {"key_bits": [4] * 6, "value_bits": [4] * 6, "group_size": 16, "residual": 16}}
    assert trial.params == {f"kv_cache.{kind}.{i}": 4 for kind in ("key_bits", "value_bits") for i in range(6)}


def test_a_kv_baseline_runs_the_kv_cache_compressor_alone_with_every_layer_at_its_width():
    space = SearchSpace.parse({"prune": SEARCHED, "kv_cache": KV})
    [two] = [b for b in build_baselines(space, BaselinesConfig()) if b.name == "uniform KV 2-bit"]
    study = optuna.create_study()
    study.enqueue_trial(two.params)
    trial = study.ask()
    sample = space.sample(trial, {"prune": 6, "kv_cache": 6}, two.overrides)
    assert sample == {"kv_cache": {"key_bits": 2, "value_bits": 2, "group_size": 16, "residual": 16}}
    assert trial.params == {}


def test_kv_widths_the_space_does_not_offer_are_skipped(caplog):
    narrow = {**KV, "value_bits": {"choices": [4, 8, 16], "per_layer": True}}
    with caplog.at_level("INFO", logger="autoprune"):
        assert [b.name for b in kv_baselines_of(narrow, kv_bits=[4, 2, 8])] == ["uniform KV 4-bit", "uniform KV 8-bit"]
    assert "skipping uniform KV 2-bit, space.kv_cache.value_bits does not offer 2" in caplog.text
    keys_only = {"key_bits": PER_LAYER_BITS}
    with caplog.at_level("INFO", logger="autoprune"):
        assert kv_baselines_of(keys_only) == []
    assert "skipping uniform KV 4-bit, space.kv_cache.value_bits is not set" in caplog.text


def test_the_bits_shorthand_is_overridden_as_bits():
    [four] = kv_baselines_of({"bits": PER_LAYER_BITS, "group_size": 16}, kv_bits=[4])
    assert four.overrides == {"kv_cache": {"bits": 4}}
    [two] = kv_baselines_of({"bits": {"choices": [2, 4]}}, kv_bits=[2])
    assert two.params == {"kv_cache.bits": 2}  # one sampled value: enqueued, so the sampler learns from it
    assert two.overrides == {"kv_cache": {}}  # the section still runs, alone
    assert [b.name for b in kv_baselines_of({"bits": 4})] == ["uniform KV 4-bit"]


def test_no_kv_baselines_when_turned_off_or_without_a_kv_cache_section():
    assert kv_baselines_of(KV, kv_bits=[]) == []
    assert all("KV" not in b.name for b in baselines_of(SEARCHED))


def test_with_a_quantize_switch_a_kv_baseline_enqueues_it_on_and_none_is_made_when_it_is_off(caplog):
    """The joint space samples the bits only when `quantize` is true: a uniform-KV baseline must
    turn it on, or the sampler could drop the very bits the baseline fixes."""
    when_on = {**PER_LAYER_BITS, "when": {"quantize": [True]}}
    switched = {"quantize": {"choices": [False, True]}, "key_bits": when_on, "value_bits": when_on}
    space = SearchSpace.parse({"prune": SEARCHED, "kv_cache": switched})
    [four] = [b for b in build_baselines(space, BaselinesConfig(), blocks=6) if b.name == "uniform KV 4-bit"]
    study = optuna.create_study()
    study.enqueue_trial(four.params)
    trial = study.ask()
    sample = space.sample(trial, {"prune": 6, "kv_cache": 6}, four.overrides)
    assert sample == {"kv_cache": {"quantize": True, "key_bits": [4] * 6, "value_bits": [4] * 6}}
    with caplog.at_level("INFO", logger="autoprune"):
        assert kv_baselines_of({**switched, "quantize": False}) == []
    assert "skipping uniform KV, space.kv_cache.quantize is false" in caplog.text
