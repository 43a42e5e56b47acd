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
