"""Human-facing views of a study's results: the console table and the Pareto plot."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

from autoprune.components import Direction


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width table, readable in any terminal and log file."""
    cells = [[format_value(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(cell[i]) for cell in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def pareto_figure(
    rows: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    objectives: Sequence[str],
    directions: Sequence[Direction],
    title: str = "",
):
    """Every completed trial in grey, the Pareto set in red, one panel per pair of objectives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(combinations(range(len(objectives)), 2)) or [(0, 0)]
    figure, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    on_front = set(front)
    for axis, (i, j) in zip(axes[0], pairs):
        x_name, y_name = objectives[i], objectives[j]
        others = [row for row in rows if row["trial"] not in on_front]
        best = sorted((row for row in rows if row["trial"] in on_front), key=lambda row: row[x_name])
        axis.scatter([r[x_name] for r in others], [r[y_name] for r in others], c="0.7", s=18, label="trial")
        axis.plot([r[x_name] for r in best], [r[y_name] for r in best], "o-", c="tab:red", ms=5, label="Pareto set")
        for row in best:
            axis.annotate(
                str(row["trial"]), (row[x_name], row[y_name]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        axis.set_xlabel(f"{x_name} ({'lower' if directions[i] == 'minimize' else 'higher'} is better)")
        axis.set_ylabel(f"{y_name} ({'lower' if directions[j] == 'minimize' else 'higher'} is better)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def layers_figure(layers: Mapping[int, Mapping[str, Sequence[Any]]], title: str = ""):
    """One panel per numeric per-layer value (e.g. prune.ratio), one line per trial, layers along x.

    A string list of the same compressor (e.g. prune.unit) names each trial's layers; the x axis
    is the union of those names, so trials that removed different blocks still line up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def is_numeric(values: Sequence[Any]) -> bool:
        return bool(values) and all(isinstance(v, (int, float)) for v in values)

    def names_of(values: Mapping[str, Sequence[Any]], key: str) -> Sequence[str] | None:
        compressor = key.partition(".")[0]
        for other, listed in values.items():
            if other.startswith(f"{compressor}.") and listed and all(isinstance(v, str) for v in listed):
                return listed if len(listed) == len(values[key]) else None
        return None

    keys = list(dict.fromkeys(k for values in layers.values() for k, v in values.items() if is_numeric(v)))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {trial: palette[index % len(palette)] for index, trial in enumerate(sorted(layers))}  # same in every panel
    figure, axes = plt.subplots(len(keys), 1, figsize=(9, 3.2 * len(keys)), squeeze=False)
    for axis, key in zip(axes[:, 0], keys):
        named = {trial: names_of(values, key) for trial, values in layers.items() if key in values}
        axis_names = list(dict.fromkeys(name for names in named.values() if names for name in names))
        position = {name: index for index, name in enumerate(axis_names)}
        for trial in sorted(named):
            values, names = layers[trial][key], named[trial]
            xs = [position[name] for name in names] if names else list(range(len(values)))
            axis.plot(xs, values, "o-", ms=3, color=color[trial], label=f"trial {trial}")
        if axis_names:
            axis.set_xticks(range(len(axis_names)), _short_labels(axis_names), rotation=90, fontsize=7)
        axis.set_ylabel(key)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("layer")
    figure.suptitle(f"{title}: per-layer values of the Pareto set")
    figure.tight_layout()
    return figure


def _short_labels(labels: Sequence[str]) -> list[str]:
    """Drop the dotted prefix all labels share: model.decoder.layers.3.fc1 -> 3.fc1."""
    common = os.path.commonprefix(list(labels))
    cut = common.rfind(".") + 1 if len(labels) > 1 else 0
    return [label[cut:] for label in labels]
