"""A trial compresses in place, scores, and leaves the dense model exactly as it was."""

import dataclasses
import math

import pytest
import torch

from autoprune import hookimpl
from autoprune.components import PruningMetric, Scorer
from autoprune.registry import build_registry
from autoprune.trial import TrialError, run_trial
from autoprune_plugins.scorers.perplexity import perplexity
from autoprune_plugins.scorers.size import format_sizes, smallest_format


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def prune_params(metric="wanda", sparsity=0.5, offsets=None):
    params = {"metric": metric, "sparsity": sparsity, "allocation": "searched" if offsets else "uniform"}
    if offsets:
        params["offsets"] = offsets
    return {"prune": params}


def test_trial_prunes_scores_and_restores_exactly(tiny_context):
    registry = tiny_context.registry
    before = snapshot(tiny_context.model)
    dense = perplexity(tiny_context.model, tiny_context.evaluation)
    result = run_trial(
        tiny_context,
        [registry.compressor("prune")],
        [registry.scorer("perplexity"), registry.scorer("size")],
        prune_params(),
    )
    assert result.values["perplexity"] > dense
    assert result.info["prune.achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert result.info["prune.ratio"] == [0.5] * len(tiny_context.layout)
    after = snapshot(tiny_context.model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert set(result.seconds) == {"compress", "score", "restore"}


def test_more_sparsity_costs_more_perplexity(tiny_context):
    registry = tiny_context.registry
    values = [
        run_trial(
            tiny_context, [registry.compressor("prune")], [registry.scorer("perplexity")], prune_params(sparsity=s)
        ).values["perplexity"]
        for s in (0.2, 0.5, 0.8)
    ]
    assert values[0] < values[1] < values[2]


def test_per_block_ratios_follow_the_searched_offsets(tiny_context):
    registry = tiny_context.registry
    n = len(tiny_context.layout)
    offsets = [0.1 if i == 0 else -0.1 / (n - 1) for i in range(n)]
    seen = {}

    class BlockSparsity(Scorer):
        name = "block_sparsity"
        objectives = {"first_block_sparsity": "minimize"}

        def score(self, context):
            first = list(context.layout.linears[0].values())
            zeros = sum(int((linear.weight == 0).sum()) for linear in first)
            seen["value"] = zeros / sum(linear.weight.numel() for linear in first)
            return {"first_block_sparsity": seen["value"]}

    result = run_trial(
        tiny_context, [registry.compressor("prune")], [BlockSparsity()], prune_params(sparsity=0.5, offsets=offsets)
    )
    assert result.info["prune.ratio"][0] == pytest.approx(0.6, abs=1e-9)
    assert seen["value"] == pytest.approx(0.6, abs=0.01)


def test_failing_scorer_still_restores_the_model(tiny_context):
    class Broken(Scorer):
        name = "broken"
        objectives = {"x": "minimize"}

        def score(self, context):
            raise RuntimeError("scorer exploded")

    before = snapshot(tiny_context.model)
    with pytest.raises(RuntimeError, match="exploded"):
        run_trial(tiny_context, [tiny_context.registry.compressor("prune")], [Broken()], prune_params(sparsity=0.7))
    after = snapshot(tiny_context.model)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_perplexity_matches_the_models_own_loss(tiny_context):
    windows = tiny_context.evaluation
    losses = [tiny_context.model(window[None], labels=window[None]).loss.item() for window in windows]
    assert perplexity(tiny_context.model, windows) == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-4)


def tensor_bytes(tensor, prunable):
    sizes = format_sizes(tensor, prunable)
    return sizes[smallest_format(sizes)]


def test_size_counts_nonzeros_plus_a_bit_mask_for_pruned_matrices():
    dense = torch.ones(4, 10)
    assert tensor_bytes(dense, prunable=True) == 160
    pruned = dense.clone()
    pruned[:, :5] = 0
    assert tensor_bytes(pruned, prunable=True) == 20 * 4 + 5  # 20 values + ceil(40 / 8) mask bytes
    assert tensor_bytes(pruned, prunable=False) == 160  # e.g. an embedding with a zero padding row
    nearly_dense = dense.clone()
    nearly_dense[0, 0] = 0
    assert tensor_bytes(nearly_dense, prunable=True) == 160  # the sparse form would be larger


def test_size_scorer_on_the_embedded_model(tiny_context):
    model, registry = tiny_context.model, tiny_context.registry
    dense_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    assert registry.scorer("size").score(tiny_context)["size_mb"] == pytest.approx(dense_mb)
    linears = tiny_context.layout.all_linears().values()
    prunable_bytes = sum(linear.weight.numel() * 4 for linear in linears)
    result = run_trial(
        tiny_context, [registry.compressor("prune")], [registry.scorer("size")], prune_params(sparsity=0.5)
    )
    # half of every linear's values are gone, a 1-bit mask per weight is added
    expected = dense_mb - (prunable_bytes / 2 - prunable_bytes / 32) / 1e6
    assert result.values["size_mb"] == pytest.approx(expected, rel=1e-3)


def test_non_finite_objective_fails_the_trial_and_restores(tiny_context):
    class NaNScorer(Scorer):
        name = "nan"
        objectives = {"x": "minimize"}

        def score(self, context):
            return {"x": float("nan")}

    before = snapshot(tiny_context.model)
    with pytest.raises(TrialError, match="returned nan for 'x'"):
        run_trial(tiny_context, [tiny_context.registry.compressor("prune")], [NaNScorer()], prune_params())
    after = snapshot(tiny_context.model)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_metric_parameters_come_from_the_space_section(tiny_context):
    seen = []

    class Powered(PruningMetric):
        name = "powered"
        comparison = "row"
        params = ("power",)

        def score(self, weight, stats, power):
            seen.append(power)
            return weight.abs() ** power

    class Plugin:
        @hookimpl
        def register_metrics(self):
            return [Powered()]

    context = dataclasses.replace(tiny_context, registry=build_registry(extra_plugins=(Plugin(),)))
    params = {"prune": {"metric": "powered", "sparsity": 0.3, "power": 2.0, "unrelated": 1}}
    run_trial(context, [context.registry.compressor("prune")], [], params)
    assert seen == [2.0] * len(context.layout.all_linears())
