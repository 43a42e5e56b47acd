"""Layerwise allocations: every one hits the requested mean exactly, and each follows its paper."""

import pytest
import torch

from autoprune_plugins.allocations.exact_mean import MAX_RATIO, renormalise
from autoprune_plugins.allocations.mrp import redundancy
from autoprune_plugins.allocations.outliers import outlier_fraction


def weighted_mean(ratios, sizes):
    return sum(r * n for r, n in zip(ratios, sizes)) / sum(sizes)


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8])
def test_searched_ratios_have_the_exact_weighted_mean(target):
    sizes = [100, 300, 300, 50, 250]
    offsets = [0.1, -0.05, 0.02, -0.1, 0.07]
    ratios = renormalise(target, offsets, sizes)
    assert sum(r * n for r, n in zip(ratios, sizes)) / sum(sizes) == pytest.approx(target, abs=1e-12)
    # the shape of the allocation is kept: same order as the offsets
    assert sorted(range(5), key=lambda i: ratios[i]) == sorted(range(5), key=lambda i: offsets[i])


def test_searched_ratios_are_clipped_and_still_exact():
    sizes = [1, 1, 1, 1]
    ratios = renormalise(0.9, [0.3, 0.3, -0.3, -0.3], sizes)
    assert max(ratios) == MAX_RATIO and min(ratios) >= 0
    assert sum(ratios) / 4 == pytest.approx(0.9, abs=1e-12)


def test_zero_offsets_are_uniform():
    assert renormalise(0.5, [0.0] * 3, [5, 6, 7]) == pytest.approx([0.5] * 3, abs=1e-12)


def test_uniform_and_searched_plugins_on_the_embedded_model(tiny_context):
    registry = tiny_context.registry
    units = tiny_context.layout.units("block")
    n = len(units)
    assert registry.allocation("uniform").ratios(0.6, units, tiny_context, {}) == [0.6] * n
    offsets = [0.05 * (i % 2) for i in range(n)]
    ratios = registry.allocation("searched").ratios(0.6, units, tiny_context, {"offsets": offsets})
    assert weighted_mean(ratios, [u.size for u in units]) == pytest.approx(0.6, abs=1e-12)
    assert ratios[1] > ratios[0]


def test_owl_follows_the_reference_formula_on_blocks(tiny_context):
    units = tiny_context.layout.units("block")
    ratios = tiny_context.registry.allocation("owl").ratios(0.7, units, tiny_context, {})
    # by hand: outlier fraction per block, min-max scaled to [0, 2λ], centred, subtracted from s
    outliers = []
    for unit in units:
        scores = torch.cat(
            [
                (linear.weight.abs() * tiny_context.stats[name].scaler_row.sqrt()).reshape(-1)
                for name, linear in unit.linears.items()
            ]
        )
        outliers.append(float((scores > 5 * scores.mean()).float().mean()))
    low, high = min(outliers), max(outliers)
    scaled = [0.16 * (d - low) / (high - low) for d in outliers]
    expected = [0.7 - (x - sum(scaled) / len(scaled)) for x in scaled]
    assert ratios == pytest.approx(expected, abs=1e-6)
    assert max(ratios) - min(ratios) == pytest.approx(0.16, abs=1e-6)  # the spread is 2λ
    assert outliers.index(max(outliers)) == ratios.index(min(ratios))  # most outliers, least pruning
    assert weighted_mean(ratios, [u.size for u in units]) == pytest.approx(0.7, abs=1e-9)


def test_owl_per_linear_keeps_the_exact_weighted_mean(tiny_context):
    units = tiny_context.layout.units("linear")
    assert len(units) == len(tiny_context.layout.all_linears())
    owl = tiny_context.registry.allocation("owl")
    ratios = owl.ratios(0.6, units, tiny_context, {"owl_lambda": 0.1, "owl_m": 3})
    assert weighted_mean(ratios, [u.size for u in units]) == pytest.approx(0.6, abs=1e-9)
    assert len(set(round(r, 6) for r in ratios)) > 2
    assert outlier_fraction(tiny_context, units[0], 3.0) > outlier_fraction(tiny_context, units[0], 5.0)


def test_optishear_takes_one_of_three_levels_per_block(tiny_context):
    units = tiny_context.layout.units("block")
    steps = [-1, 1] * (len(units) // 2)
    ratios = tiny_context.registry.allocation("optishear").ratios(0.5, units, tiny_context, {"steps": steps})
    assert ratios == pytest.approx([0.5 + 0.05 * step for step in steps], abs=1e-9)  # equal blocks: no shift
    lopsided = tiny_context.registry.allocation("optishear").ratios(
        0.5, units, tiny_context, {"steps": [1] * len(units)}
    )
    assert lopsided == pytest.approx([0.5] * len(units), abs=1e-9)  # the exact mean pulls them back


def test_redundancy_is_the_non_outlier_ratio_of_the_kept_scores():
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 10.0, 100.0], dtype=torch.float64)
    prefix = scores.cumsum(0)
    # all 10 kept: mean 11.8, threshold 2 · 11.8 = 23.6, 9 of 10 below
    assert redundancy(scores, prefix, 0.0, 2.0) == pytest.approx(0.9)
    # lowest 8 pruned: kept {10, 100}, mean 55, threshold 110: both below
    assert redundancy(scores, prefix, 0.8, 2.0) == pytest.approx(1.0)


def test_mrp_prunes_redundant_units_more_and_hits_the_mean(tiny_context):
    units = tiny_context.layout.units("block")
    mrp = tiny_context.registry.allocation("mrp")
    ratios = mrp.ratios(0.6, units, tiny_context, {})
    assert weighted_mean(ratios, [u.size for u in units]) == pytest.approx(0.6, abs=1e-9)
    assert all(0 <= r <= MAX_RATIO for r in ratios)
    assert max(ratios) - min(ratios) > 0.02  # not uniform: the units differ in redundancy
    assert mrp.ratios(0.6, units, tiny_context, {}) == ratios  # deterministic


def test_mrp_reaches_the_highest_sparsity_without_running_out_of_units(tiny_context):
    units = tiny_context.layout.units("block")
    ratios = tiny_context.registry.allocation("mrp").ratios(MAX_RATIO, units, tiny_context, {})
    assert ratios == pytest.approx([MAX_RATIO] * len(units), abs=1e-9)


def test_a_searched_granularity_cannot_share_per_layer_families(tiny_context):
    from autoprune.errors import ConfigError

    prune = tiny_context.registry.compressor("prune")
    section = {
        "metric": "wanda",
        "sparsity": 0.5,
        "granularity": {"choices": ["block", "linear"]},
        "offsets": {"low": -0.1, "high": 0.1, "per_layer": True},
    }
    with pytest.raises(ConfigError, match="would mean blocks in some trials and linears in others"):
        prune.check(section, tiny_context.registry)
    without_families = {key: value for key, value in section.items() if key != "offsets"}
    prune.check(without_families, tiny_context.registry)  # a searched granularity alone is fine


def test_granularity_names_which_linears_share_a_ratio(tiny_context):
    blocks, linears = tiny_context.layout.units("block"), tiny_context.layout.units("linear")
    assert [unit.slot for unit in blocks] == list(range(len(tiny_context.layout)))
    assert [unit.slot for unit in linears] == list(range(len(linears)))
    assert sum(unit.size for unit in blocks) == sum(unit.size for unit in linears)
    assert all(len(unit.linears) == 1 for unit in linears)
