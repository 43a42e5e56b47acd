"""Pareto fronts and their hypervolume for any mix of directions."""

import pytest

from autoprune.pareto import dominates, pareto_front


def test_dominance_respects_directions():
    assert dominates([1, 5], [2, 5], ["minimize", "minimize"])
    assert not dominates([1, 5], [1, 5], ["minimize", "minimize"])  # equal points do not dominate
    assert dominates([1, 9], [1, 5], ["minimize", "maximize"])
    assert not dominates([2, 9], [1, 5], ["minimize", "maximize"])


def test_front_with_a_maximised_objective():
    # (perplexity: minimise, accuracy: maximise)
    points = {0: [10.0, 0.5], 1: [12.0, 0.7], 2: [12.0, 0.6], 3: [9.0, 0.4], 4: [10.0, 0.5]}
    assert pareto_front(points, ["minimize", "maximize"]) == [0, 1, 3, 4]


def test_single_objective_front_is_the_best_value():
    assert pareto_front({0: [3.0], 1: [1.0], 2: [2.0]}, ["minimize"]) == [1]


def test_the_per_layer_plot_lines_up_trials_that_removed_different_blocks():
    from autoprune.plots import layers_figure

    figure = layers_figure(
        {
            3: {"prune.unit": ["m.layers.0", "m.layers.1", "m.layers.2"], "prune.ratio": [0.5, 0.6, 0.7]},
            7: {
                "remove_layers.block": ["m.layers.0", "m.layers.1", "m.layers.2"],
                "remove_layers.removed": [0, 1, 0],
                "prune.unit": ["m.layers.0", "m.layers.2"],
                "prune.ratio": [0.4, 0.8],
            },
        },
        "study",
    )
    removed, ratio = figure.axes  # in the order the compressors run
    assert ratio.get_ylabel() == "prune.ratio" and removed.get_ylabel() == "remove_layers.removed"
    assert [t.get_text() for t in ratio.get_xticklabels()] == ["0", "1", "2"]
    assert [[round(x) for x in line.get_xdata()] for line in ratio.lines] == [[0, 1, 2], [0, 2]]  # block 2 where it is
    assert ratio.lines[1].get_color() == removed.lines[0].get_color()  # trial 7 in the same colour in every panel


def test_hypervolume_equals_the_dominated_cells_counted_one_by_one():
    """Integer points: the exact slicing result against a plain count of the unit cells they dominate."""
    import itertools
    import random

    from autoprune.pareto import hypervolume

    generator = random.Random(7)
    for objectives in (1, 2, 3):
        for _ in range(20):
            points = [[generator.randrange(10) for _ in range(objectives)] for _ in range(generator.randrange(1, 9))]
            cells = sum(
                any(all(p <= c for p, c in zip(point, cell)) for point in points)
                for cell in itertools.product(range(10), repeat=objectives)
            )
            assert hypervolume(points, [10] * objectives, ["minimize"] * objectives) == cells


def test_hypervolume_of_a_maximised_objective_and_of_points_beyond_the_reference():
    from autoprune.pareto import hypervolume, reference_point

    # accuracy (maximised) 0.6 against a reference of 0.2, perplexity 10 against 30: a 0.4 x 20 box
    assert hypervolume([[10.0, 0.6]], [30.0, 0.2], ["minimize", "maximize"]) == pytest.approx(0.4 * 20)
    assert hypervolume([[40.0, 0.6]], [30.0, 0.2], ["minimize", "maximize"]) == 0.0  # worse than the reference
    assert reference_point([50.0, 0.4, 0.0], ["minimize", "maximize", "minimize"]) == [100.0, 0.0, 1.0]


def test_a_better_front_has_a_larger_hypervolume():
    from autoprune.pareto import hypervolume

    reference, directions = [10.0, 10.0], ["minimize", "minimize"]
    front = [[2.0, 6.0], [5.0, 3.0]]
    assert hypervolume([*front, [3.0, 4.0]], reference, directions) > hypervolume(front, reference, directions)
    assert hypervolume([*front, [6.0, 7.0]], reference, directions) == hypervolume(front, reference, directions)
