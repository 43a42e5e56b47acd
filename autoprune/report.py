"""Human-facing views of a study's results: the Pareto front as a console table and as the
parent run's `pareto.json`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoprune.components import Direction


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width table, readable in any terminal and log file: numbers right-aligned, text left."""
    cells = [[format_value(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(cell[i]) for cell in cells]) for i, column in enumerate(columns)]
    text = [any(isinstance(row.get(column), str) for row in rows) for column in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if t else v.rjust(w) for v, w, t in zip(values, widths, text)).rstrip()

    return "\n".join([line(columns), *(line(row) for row in cells)])


def front_rows(
    rows: Sequence[Mapping[str, Any]], front: Sequence[int], objectives: Sequence[str], directions: Sequence[Direction]
) -> list[Mapping[str, Any]]:
    """The rows of the front's trials, best first by the first objective (ties: lower trial number)."""
    on_front = set(front)
    sign = 1 if directions[0] == "minimize" else -1
    return sorted(
        (row for row in rows if row["trial"] in on_front), key=lambda row: (sign * row[objectives[0]], row["trial"])
    )


def front_table(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[str],
    names: Mapping[int, str],
    run_ids: Mapping[int, str],
) -> dict[str, list[Any]]:
    """Columns of the front's table (`rows` from `front_rows`): trial, name, run id, the objectives,
    then every other value. Column names are flat, `prune/metric` for `prune.metric`: MLflow's table
    view reads a dot as a path into the row and would show the column empty."""
    first = ["trial", "name", "run_id", *objectives]
    fullest_first = sorted(rows, key=len, reverse=True)  # a sampled trial lists every parameter in the space's order
    others = [key for key in dict.fromkeys(key for row in fullest_first for key in row) if key not in first]
    table: dict[str, list[Any]] = {
        "trial": [row["trial"] for row in rows],
        "name": [names.get(row["trial"], "") for row in rows],
        "run_id": [run_ids.get(row["trial"], "") for row in rows],
    }
    for key in [*objectives, *others]:
        table[key.replace(".", "/")] = [row.get(key) for row in rows]  # a resumed study may add keys
    return table
