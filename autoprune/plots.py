"""Pictures of a study's results: the objectives (`pareto.png`, and `pareto.html` to explore with the
mouse) and the per-layer values of the Pareto front (`pareto_layers.png`).

Baselines are squares, sampled trials circles; the front is red, the rest grey. The axes frame
the front, so a few far-off trials do not squeeze it into a corner; labels that would overlap a
point or another label move, shorten to the trial's number, or are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from autoprune.components import Direction

FRONT, OTHER = "#d62728", "#a6a6a6"  # matplotlib's tab:red and a light grey
_LABEL_OFFSETS = [(5, 4), (5, -11), (-5, 4), (-5, -11), (9, 13), (9, -20), (-9, 13), (-9, -20), (14, -3), (-14, -3)]
_MARKERS = "os^vDPX*<>"
_DASHES = ["-", "--", ":", "-."]


@dataclass(frozen=True)
class Point:
    """One completed trial as the plots show it."""

    number: int
    values: tuple[float, ...]  # objective values, in the study's order
    name: str  # its run name, e.g. "t013 wanda 0.56"
    baseline: str | None
    on_front: bool
    run_id: str = ""

    @property
    def label(self) -> str:
        return f"t{self.number:03d} {self.baseline}" if self.baseline else f"t{self.number:03d}"


def points_of(
    rows: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    objectives: Sequence[str],
    names: Mapping[int, str],
    run_ids: Mapping[int, str],
) -> list[Point]:
    """The plots' view of the study's completed trials (rows as `run_study` builds them)."""
    on_front = set(front)
    return [
        Point(
            row["trial"],
            tuple(float(row[o]) for o in objectives),
            names.get(row["trial"], f"t{row['trial']:03d}"),
            row.get("baseline") if row.get("baseline", "-") != "-" else None,
            row["trial"] in on_front,
            run_ids.get(row["trial"], ""),
        )
        for row in rows
    ]


def _pairs(count: int) -> list[tuple[int, int]]:
    return list(combinations(range(count), 2)) or [(-1, 0)]  # one objective: against the trial number


def _coordinate(point: Point, index: int) -> float:
    return float(point.number) if index < 0 else point.values[index]


def _axis_title(objectives: Sequence[str], directions: Sequence[Direction], index: int) -> str:
    if index < 0:
        return "trial"
    return f"{objectives[index]} ({'lower' if directions[index] == 'minimize' else 'higher'} is better)"


def _frame(points: Sequence[Point], index: int, direction: Direction) -> tuple[float, float] | None:
    """Limits of objective `index`'s axis around the front, with room for the trials just behind it
    (on the worse side); None, to show every trial, when the front has a single value there."""
    front = [p.values[index] for p in points if p.on_front]
    everything = [p.values[index] for p in points]
    low, high = min(front), max(front)
    span = high - low
    if span == 0:
        return None
    below, above = (0.3, 0.6) if direction == "minimize" else (0.6, 0.3)
    return max(min(everything), low - below * span) - 0.06 * span, min(
        max(everything), high + above * span
    ) + 0.06 * span


def _outside(axis, points: Sequence[Point], i: int, j: int) -> int:
    (x0, x1), (y0, y1) = axis.get_xlim(), axis.get_ylim()
    return sum(not (x0 <= _coordinate(p, i) <= x1 and y0 <= _coordinate(p, j) <= y1) for p in points)


def pareto_figure(points: Sequence[Point], objectives: Sequence[str], directions: Sequence[Direction], title: str = ""):
    """One panel per pair of objectives; every completed trial, the front in red, baselines as squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = _pairs(len(objectives))
    front = [p for p in points if p.on_front]
    side = 5.0 + min(4.0, len(front) / 10)  # larger panels for larger fronts, so labels find room
    columns = min(2, len(pairs))  # two panels a row: readable when the UI fits the picture to its width
    rows = -(-len(pairs) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(side * columns, side * 0.85 * rows), squeeze=False)
    axes = list(grid.flat)
    for unused in axes[len(pairs) :]:
        figure.delaxes(unused)
    for axis, (i, j) in zip(axes, pairs):
        for group, color, label in (
            ([p for p in points if not p.on_front], OTHER, "other trials"),
            (front, FRONT, "Pareto front"),
        ):
            for is_baseline, marker in ((False, "o"), (True, "s")):
                chosen = [p for p in group if (p.baseline is not None) == is_baseline]
                if chosen:
                    axis.scatter(
                        [_coordinate(p, i) for p in chosen],
                        [_coordinate(p, j) for p in chosen],
                        c=color,
                        marker=marker,
                        s=34 if is_baseline else 22,
                        edgecolors="black" if is_baseline else "none",
                        linewidths=0.6,
                        label=f"{label}, {'baselines' if is_baseline else 'sampled'}",
                        zorder=3 if group is front else 2,
                    )
        if len(objectives) == 2:  # the trade-off curve; with more objectives a projection has none
            ordered = sorted(front, key=lambda p: p.values[0])
            axis.plot([p.values[0] for p in ordered], [p.values[1] for p in ordered], c=FRONT, lw=0.8, alpha=0.5)
        if front:
            for index, limit in ((i, axis.set_xlim), (j, axis.set_ylim)):
                frame = _frame(points, index, directions[index]) if index >= 0 else None
                if frame:
                    limit(*frame)
            outside = _outside(axis, points, i, j)
            if outside:
                trials = "1 trial" if outside == 1 else f"{outside} trials"
                axis.set_title(f"{trials} far behind the front beyond these axes", fontsize=8)
        axis.set_xlabel(_axis_title(objectives, directions, i))
        axis.set_ylabel(_axis_title(objectives, directions, j))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    figure.suptitle(f"{title}: {len(front)} of {len(points)} trials on the Pareto front")
    figure.tight_layout()
    fontsize = 7 if len(front) <= 20 else 6
    for axis, (i, j) in zip(axes, pairs):
        place_labels(
            axis, [(_coordinate(p, i), _coordinate(p, j), p.label, f"t{p.number:03d}") for p in front], fontsize
        )
    return figure


def place_labels(axis, labels: Sequence[tuple[float, float, str, str]], fontsize: float) -> list:
    """Annotate points with `(x, y, text, short text)` where neither overlaps a point nor another
    label nor leaves the axes: the first free place of a few around the point, then the short text,
    else no label. Returns the annotations placed."""
    renderer = axis.figure.canvas.get_renderer()
    frame = axis.get_window_extent(renderer)
    transform = axis.transData
    taken = []
    for x, y in ((x, y) for x, y, *_ in labels):  # the markers themselves
        px, py = transform.transform((x, y))
        taken.append((px - 4, py - 4, px + 4, py + 4))
    if axis.get_legend() is not None:
        box = axis.get_legend().get_window_extent(renderer)
        taken.append((box.x0, box.y0, box.x1, box.y1))
    placed = []
    for x, y, text, short in labels:
        annotation = _first_free(axis, renderer, frame, taken, x, y, text, fontsize)
        if annotation is None and short != text:
            annotation = _first_free(axis, renderer, frame, taken, x, y, short, fontsize)
        if annotation is not None:
            placed.append(annotation)
    return placed


def _first_free(axis, renderer, frame, taken: list, x: float, y: float, text: str, fontsize: float):
    for dx, dy in _LABEL_OFFSETS:
        annotation = axis.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=fontsize,
            ha="left" if dx > 0 else "right",
        )
        box = annotation.get_window_extent(renderer)
        edges = (box.x0, box.y0, box.x1, box.y1)
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        if inside and not any(_overlap(edges, other) for other in taken):
            taken.append(edges)
            return annotation
        annotation.remove()
    return None


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def pareto_html(points: Sequence[Point], objectives: Sequence[str], directions: Sequence[Direction], title: str) -> str:
    """The same panels as `pareto_figure`, interactive: hover a point for its name, values and run."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = _pairs(len(objectives))
    figure = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.08)
    groups = [
        ("Pareto front, sampled", FRONT, "circle", lambda p: p.on_front and p.baseline is None),
        ("Pareto front, baselines", FRONT, "square", lambda p: p.on_front and p.baseline is not None),
        ("other trials, sampled", OTHER, "circle", lambda p: not p.on_front and p.baseline is None),
        ("other trials, baselines", OTHER, "square", lambda p: not p.on_front and p.baseline is not None),
    ]
    for column, (i, j) in enumerate(pairs, start=1):
        for name, color, symbol, chosen in groups:
            members = [p for p in points if chosen(p)]
            if not members:
                continue
            hover = [
                "<br>".join(
                    [f"<b>{p.name}</b>", *(f"{o}: {v:.4g}" for o, v in zip(objectives, p.values)), f"run {p.run_id}"]
                )
                for p in members
            ]
            figure.add_trace(
                go.Scatter(
                    x=[_coordinate(p, i) for p in members],
                    y=[_coordinate(p, j) for p in members],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=column == 1,
                    marker={"color": color, "symbol": symbol, "size": 10, "line": {"width": 1, "color": "black"}},
                    hovertext=hover,
                    hoverinfo="text",
                ),
                row=1,
                col=column,
            )
        figure.update_xaxes(title_text=_axis_title(objectives, directions, i), row=1, col=column)
        figure.update_yaxes(title_text=_axis_title(objectives, directions, j), row=1, col=column)
    front = sum(p.on_front for p in points)
    figure.update_layout(
        title=f"{title}: {front} of {len(points)} trials on the Pareto front",
        height=560,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.18},  # below the panels, which keep the width
    )
    return figure.to_html(include_plotlyjs=True, full_html=True)  # works offline, as MLflow's viewer shows it


def layers_figure(
    layers: Mapping[int, Mapping[str, Sequence[Any]]], title: str = "", names: Mapping[int, str] | None = None
):
    """One panel per numeric per-layer value (e.g. prune.ratio), one line per trial, layers along x.

    A string list of the same compressor (e.g. prune.unit) names each trial's layers; the x axis
    is the union of those names, so trials that removed different blocks still line up. Each trial
    keeps its colour, marker and dash in every panel, and is shifted a little along x, so lines
    with equal values stay visible side by side.
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

    trials = sorted(layers)
    fullest_first = sorted(layers.values(), key=len, reverse=True)  # its keys in the space's order
    keys = list(dict.fromkeys(k for values in fullest_first for k, v in values.items() if is_numeric(v)))
    colors = trial_colors(len(trials))
    shift = min(0.3 / max(len(trials), 1), 0.08)
    style = {
        trial: {
            "color": colors[index],
            "marker": _MARKERS[index % len(_MARKERS)],
            "linestyle": _DASHES[(index // len(_MARKERS)) % len(_DASHES)],
            "dx": (index - (len(trials) - 1) / 2) * shift,
        }
        for index, trial in enumerate(trials)
    }
    handles = {}
    figure, axes = plt.subplots(
        len(keys), 1, figsize=(9 + 2.5 * (len(trials) > 12), 2.2 + 2.4 * len(keys)), squeeze=False, layout="constrained"
    )
    for axis, key in zip(axes[:, 0], keys):
        named = {trial: names_of(values, key) for trial, values in layers.items() if key in values}
        axis_names = list(dict.fromkeys(name for listed in named.values() if listed for name in listed))
        position = {name: index for index, name in enumerate(axis_names)}
        for trial in sorted(named):
            values, listed, look = layers[trial][key], named[trial], style[trial]
            xs = [position[name] for name in listed] if listed else list(range(len(values)))
            (handles[trial],) = axis.plot(
                [x + look["dx"] for x in xs],
                values,
                marker=look["marker"],
                linestyle=look["linestyle"],
                color=look["color"],
                ms=4,
                lw=1.1,
                alpha=0.85,
                label=(names or {}).get(trial, f"t{trial:03d}"),
            )
        if axis_names:
            axis.set_xticks(range(len(axis_names)), _short_labels(axis_names), rotation=90, fontsize=7)
        axis.set_ylabel(key)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("layer")
    ordered = sorted(handles)  # one entry per trial, whichever panels it appears in
    figure.legend(
        [handles[t] for t in ordered],
        [handles[t].get_label() for t in ordered],
        loc="outside lower center",
        fontsize=7,
        ncol=2,
    )
    figure.suptitle(f"{title}: per-layer values of the Pareto front")
    return figure


def trial_colors(count: int) -> list:
    """Distinct colours: matplotlib's 10 qualitative ones, or up to 60 from its three 20-colour
    maps; beyond that evenly spaced hues (the markers and dashes still tell the trials apart)."""
    import matplotlib

    if count <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(count)]
    if count <= 60:
        palette = [matplotlib.colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
        return palette[:count]
    return [matplotlib.colormaps["hsv"](i / (count + 1)) for i in range(count)]


def _short_labels(labels: Sequence[str]) -> list[str]:
    """Drop the dotted prefix all labels share: model.decoder.layers.3.fc1 -> 3.fc1."""
    import os

    common = os.path.commonprefix(list(labels))
    cut = common.rfind(".") + 1 if len(labels) > 1 else 0
    return [label[cut:] for label in labels]
