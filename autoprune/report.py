"""Human-facing views of a study's results: the console table and the Pareto plot."""

from __future__ import annotations

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
