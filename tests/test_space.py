"""The search space is data: parsed from the config, sampled through any suggest_* backend."""

import optuna
import pytest

from autoprune.errors import ConfigError
from autoprune.space import SearchSpace

SPACE = {
    "prune": {
        "metric": {"choices": ["magnitude", "wanda"]},
        "sparsity": {"low": 0.2, "high": 0.8},
        "allocation": "searched",
        "offsets": {"low": -0.1, "high": 0.1, "per_layer": True},
        "blocks": {"low": 1, "high": 3, "type": "int"},
    }
}


def test_sample_expands_per_layer_families_and_keeps_constants():
    space = SearchSpace.parse(SPACE)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    sample = space.sample(trial, {"prune": 4})["prune"]
    assert sample["metric"] in ("magnitude", "wanda")
    assert 0.2 <= sample["sparsity"] <= 0.8
    assert sample["allocation"] == "searched"
    assert len(sample["offsets"]) == 4 and all(-0.1 <= o <= 0.1 for o in sample["offsets"])
    assert isinstance(sample["blocks"], int) and 1 <= sample["blocks"] <= 3
    assert set(trial.params) == {"prune.metric", "prune.sparsity", "prune.blocks"} | {
        f"prune.offsets.{i}" for i in range(4)
    }


def test_fixed_trial_reproduces_a_sample():
    space = SearchSpace.parse(SPACE)
    params = {
        "prune.metric": "wanda",
        "prune.sparsity": 0.5,
        "prune.blocks": 2,
        **{f"prune.offsets.{i}": 0.01 * i for i in range(2)},
    }
    sample = space.sample(optuna.trial.FixedTrial(params), {"prune": 2})["prune"]
    assert sample == {"metric": "wanda", "sparsity": 0.5, "allocation": "searched", "offsets": [0.0, 0.01], "blocks": 2}


def test_describe_is_readable():
    described = SearchSpace.parse(SPACE).describe()["prune"]
    assert described["metric"] == "one of ['magnitude', 'wanda']"
    assert described["offsets"] == "float in [-0.1, 0.1] per layer"
    assert described["allocation"] == "'searched'"


@pytest.mark.parametrize(
    "section, message",
    [
        ({"metric": {"choices": []}}, "choices is empty"),
        ({"sparsity": {"low": 0.9, "high": 0.1}}, "low 0.9 above high 0.1"),
        ({"sparsity": {"low": 0.1}}, "needs either `choices` or both `low` and `high`"),
        ({"sparsity": {"low": 0.1, "high": 0.2, "kind": "float"}}, "unknown keys ['kind']"),
        ({"sparsity": {"low": 0.1, "high": 0.2, "type": "bool"}}, "use float or int"),
        ({"sparsity": {"low": 0.0, "high": 0.2, "log": True}}, "a log scale needs low > 0"),
        ({"sparsity": {"low": 0.1, "high": 0.2, "log": True, "step": 0.05}}, "has both log and step"),
    ],
)
def test_invalid_entries_are_named(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SearchSpace.parse({"prune": section})


def test_empty_space_is_an_error():
    with pytest.raises(ConfigError, match="search space is empty"):
        SearchSpace.parse({})


CONDITIONAL = {
    "prune": {
        "metric": {"choices": ["wanda", "meta"]},
        "pattern": {"choices": ["unstructured", "2:4"]},
        "sparsity": {"low": 0.2, "high": 0.8, "when": {"pattern": "unstructured"}},
        "meta_weight_norm": {"choices": ["one", "row_sum"], "when": {"metric": ["meta"]}},
    }
}


def test_conditional_parameters_are_sampled_only_when_their_condition_holds():
    space = SearchSpace.parse(CONDITIONAL)
    fixed = optuna.trial.FixedTrial({"prune.metric": "wanda", "prune.pattern": "2:4"})
    assert space.sample(fixed, {"prune": 2})["prune"] == {"metric": "wanda", "pattern": "2:4"}
    fixed = optuna.trial.FixedTrial(
        {
            "prune.metric": "meta",
            "prune.pattern": "unstructured",
            "prune.sparsity": 0.4,
            "prune.meta_weight_norm": "one",
        }
    )
    sample = space.sample(fixed, {"prune": 2})["prune"]
    assert sample == {"metric": "meta", "pattern": "unstructured", "sparsity": 0.4, "meta_weight_norm": "one"}
    assert space.describe()["prune"]["meta_weight_norm"] == "one of ['one', 'row_sum'] when metric in ['meta']"


def test_a_study_samples_conditional_parameters_only_where_they_apply():
    space = SearchSpace.parse(CONDITIONAL)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        sample = space.sample(trial, {"prune": 2})["prune"]
        assert ("meta_weight_norm" in sample) == (sample["metric"] == "meta")
        assert ("sparsity" in sample) == (sample["pattern"] == "unstructured")
        study.tell(trial, 0.0)


def test_conditions_must_name_an_earlier_parameter():
    with pytest.raises(ConfigError, match="when names 'metric', which is not a parameter declared before it"):
        SearchSpace.parse(
            {"prune": {"sparsity": {"low": 0.1, "high": 0.2, "when": {"metric": "meta"}}, "metric": "meta"}}
        )
