"""Pareto fronts for any mix of directions."""

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
    from autoprune.report import layers_figure

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
    ratio, removed = figure.axes
    assert ratio.get_ylabel() == "prune.ratio" and removed.get_ylabel() == "remove_layers.removed"
    assert [t.get_text() for t in ratio.get_xticklabels()] == ["0", "1", "2"]
    assert [list(line.get_xdata()) for line in ratio.lines] == [[0, 1, 2], [0, 2]]  # block 2 where block 2 is
    assert ratio.lines[1].get_color() == removed.lines[0].get_color()  # trial 7 in the same colour in every panel
