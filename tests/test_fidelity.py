"""Multi-fidelity: the perplexity scorer's stages, the gate's stopping rule, the staged measure."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoprune.fidelity import DOMINATORS, Gate, Measured, TrialStopped
from autoprune.journal import Journal
from autoprune.trial import compress, measure
from autoprune_plugins.compressors.prune import Prune
from autoprune_plugins.scorers.perplexity import Perplexity
from autoprune_plugins.scorers.size import CompressedSize

DIRECTIONS = {"perplexity": "minimize", "size_mb": "minimize"}


@pytest.fixture(scope="module")
def context(tiny_context):
    context = dataclasses.replace(tiny_context, cache={})
    Perplexity().prepare(context)
    return context


def test_the_stages_end_with_the_perplexity_score_gives_and_the_dense_model_has_no_divergence(context):
    stages = list(Perplexity().score_in_stages(context))
    names = [name for name, _ in stages]
    assert names[0] == "kl" and names[-1] == "full" and any(name.startswith("ppl@") for name in names)
    assert stages[0][1]["perplexity"] == pytest.approx(0.0, abs=1e-6)
    assert stages[-1][1] == Perplexity().score(context)  # the same number, not a re-estimate


def test_pruning_raises_the_divergence_and_the_partial_perplexity(context):
    journal = Journal()
    compress(context, [Prune()], {"prune": {"metric": "magnitude", "sparsity": 0.7}}, journal)
    try:
        pruned = dict(Perplexity().score_in_stages(context))
    finally:
        journal.restore()
    dense = dict(Perplexity().score_in_stages(context))
    assert pruned["kl"]["perplexity"] > 0.05
    for stage in dense:
        if stage != "kl":
            assert pruned[stage]["perplexity"] > dense[stage]["perplexity"]


def completed(kl: float, size: float) -> Measured:
    return Measured({"perplexity": 70.0, "size_mb": size}, {"perplexity/kl": {"perplexity": kl}})


def test_a_trial_stops_only_when_enough_completed_trials_dominate_it_on_everything_measured():
    gate = Gate(DIRECTIONS, [completed(0.1, 10.0)] * DOMINATORS)
    assert gate.dominators_of("perplexity/kl", {"perplexity": 0.2}, {"size_mb": 10.0}) == DOMINATORS
    assert gate.dominators_of("perplexity/kl", {"perplexity": 0.2}, {"size_mb": 9.0}) == 0  # smaller: kept
    assert gate.dominators_of("perplexity/kl", {"perplexity": 0.1}, {"size_mb": 10.0}) == 0  # equal: kept
    assert gate.dominators_of("perplexity/ppl@1/4", {"perplexity": 0.2}, {"size_mb": 10.0}) == 0  # other stage
    few = Gate(DIRECTIONS, [completed(0.1, 10.0)] * (DOMINATORS - 1))
    few.check("perplexity/kl", {"perplexity": 0.9}, {"size_mb": 20.0}, {})  # too few to stop it
    with pytest.raises(TrialStopped, match=f"dominated by {DOMINATORS} completed trials at stage perplexity/kl"):
        gate.check("perplexity/kl", {"perplexity": 0.9}, {"size_mb": 20.0}, {})


values = st.floats(0, 100, allow_nan=False)


@given(st.lists(st.tuples(values, values), max_size=8), values, values)
def test_no_trial_on_the_front_of_its_stage_is_ever_stopped(others, kl, size):
    """A trial that no completed trial dominates (at its stage, on what is measured) goes on."""
    gate = Gate(DIRECTIONS, [completed(a, b) for a, b in others], dominators=1)
    dominated = any(a <= kl and b <= size and (a, b) != (kl, size) for a, b in others)
    assert (gate.dominators_of("perplexity/kl", {"perplexity": kl}, {"size_mb": size}) > 0) == dominated


def test_measure_runs_single_stage_scorers_first_and_stops_at_the_first_dominated_stage(context):
    scorers = [Perplexity().bind({}), CompressedSize().bind({})]
    dense_size = measure(context, [scorers[1]])[0]["size_mb"]
    gate = Gate(DIRECTIONS, [completed(-1.0, dense_size)] * DOMINATORS)
    with pytest.raises(TrialStopped) as stopped:
        measure(context, scorers, gate)
    assert stopped.value.stage == "perplexity/kl" and list(stopped.value.stages) == ["perplexity/kl"]
    values, _, stages = measure(context, scorers, Gate(DIRECTIONS, []))
    assert values == measure(context, scorers)[0] and "perplexity/kl" in stages
