"""Constraints: parsed before compute, measured per trial as Optuna's violations, feasibility."""

import math

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoprune.bounds import parse_bound
from autoprune.constraints import is_feasible, parse_constraints, violations, violations_of
from autoprune.errors import ConfigError
from autoprune.trial import TrialError

OBJECTIVES = ["perplexity", "memory_mb"]
PREFIXES = ["perplexity", "memory", "prune", "latency"]


def test_constraints_name_objectives_or_figures_of_the_selected_plugins():
    parsed = parse_constraints(
        ["memory_mb <= 12", "latency.decode_ratio<0.9", "prune.achieved_sparsity>=0.4"], OBJECTIVES, PREFIXES
    )
    assert [str(c) for c in parsed] == ["memory_mb<=12", "latency.decode_ratio<0.9", "prune.achieved_sparsity>=0.4"]


@pytest.mark.parametrize(
    "text, says",
    [
        ("memory_mb = 12", "constraints[0] is 'memory_mb = 12'; write <name><op><number>"),
        ("memory_mb <= twelve", "write <name><op><number> with op one of <= < >= >"),
        ("memory_mb <= nan", "write <name><op><number>"),
        (
            "size_mb <= 12",
            "names 'size_mb', which no trial of this study measures; name an objective (perplexity, memory_mb)",
        ),
        ("kv_cache.mean_bits <= 4", "or a figure of a scorer or compressor (perplexity.<figure>, memory.<figure>"),
        ("latency <= 4", "names 'latency', which no trial"),
    ],
)
def test_a_bad_constraint_is_one_line_naming_the_fix(text, says):
    with pytest.raises(ConfigError) as error:
        parse_constraints([text], OBJECTIVES, PREFIXES)
    assert says in str(error.value) and "\n" not in str(error.value)


@given(
    op=st.sampled_from(["<=", "<", ">=", ">"]),
    limit=st.floats(-1e6, 1e6, allow_nan=False),
    value=st.floats(-1e6, 1e6, allow_nan=False),
)
def test_a_violation_is_zero_exactly_when_the_bound_holds_and_grows_with_the_distance(op, limit, value):
    bound = parse_bound(f"x {op} {limit!r}")
    [violation] = violations([bound], {"x": value})
    assert (violation == 0) == bound.holds(value)
    assert violation >= 0 and math.isfinite(violation)
    if violation:
        assert violation == pytest.approx(max(abs(value - limit), violation), rel=1e-12)


def test_a_trial_missing_a_constrained_figure_fails_with_what_it_logged():
    with pytest.raises(
        TrialError, match=r"constraints name \['latency.decode_ratio'\].*it logged: memory_mb, perplexity"
    ):
        violations(
            parse_constraints(["latency.decode_ratio<1"], OBJECTIVES, PREFIXES), {"perplexity": 70.0, "memory_mb": 9.0}
        )


def test_the_violations_are_read_back_from_optuna_storage_and_an_unconstrained_trial_is_feasible(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db")
    constrained, unconstrained = study.ask(), study.ask()
    constrained.set_constraint("memory_mb<=12", 0.0)
    constrained.set_constraint("latency_ms<=4", 2.5)
    study.tell(constrained, 1.0)
    study.tell(unconstrained, 2.0)
    first, second = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert sorted(violations_of(first)) == [0.0, 2.5] and not is_feasible(violations_of(first))
    assert violations_of(second) == [] and is_feasible(violations_of(second))
    assert is_feasible([0.0, 0.0]) and is_feasible([]) and is_feasible(None)
