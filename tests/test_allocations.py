"""Layerwise allocations: the searched one hits the requested mean exactly."""

import pytest

from autoprune_plugins.allocations.searched import MAX_RATIO, renormalise


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
    n = len(tiny_context.layout)
    assert registry.allocation("uniform").ratios(0.6, tiny_context, {}) == [0.6] * n
    ratios = registry.allocation("searched").ratios(0.6, tiny_context, {"offsets": [0.05 * (i % 2) for i in range(n)]})
    sizes = tiny_context.layout.block_sizes()
    assert sum(r * s for r, s in zip(ratios, sizes)) / sum(sizes) == pytest.approx(0.6, abs=1e-12)
    assert ratios[1] > ratios[0]
