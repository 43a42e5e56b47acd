"""The words a person reviewing a study reads: trial names, the parent run's settings, description
and plain-language summary of the Pareto front (MLflow and optuna-dashboard show the same names)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from statistics import fmean
from typing import TYPE_CHECKING, Any

from autoprune.components import Direction
from autoprune.pick import knee
from autoprune.report import format_value
from autoprune.tracking import HYPERVOLUME

if TYPE_CHECKING:
    from autoprune.plan import Plan

_LAYER = re.compile(r"^(?P<family>.+)\.\d+$")


def trial_name(number: int, params: Mapping[str, Any], baseline: str | None = None) -> str:
    """`t013 wanda 0.56 key_bits~4.2`: the trial's number, then its baseline's name or what was
    sampled, in the space's order: a string choice as its value, a real number to two decimals,
    an integer or a flag as `name=value`; a per-layer family of integers (bits, steps) as its
    mean, `name~mean` (`name=value` when every layer has the same); per-layer real numbers (offsets
    around a sampled sparsity) are left to the run's params."""
    if baseline:
        return f"t{number:03d} baseline {baseline}"
    families: dict[str, list[Any]] = {}
    for key, value in params.items():
        match = _LAYER.match(key)
        families.setdefault(match["family"] if match else key, []).append(value)
    words = [word for key, values in families.items() if (word := _describe(key, values, len(values) > 1))]
    return " ".join([f"t{number:03d}", *words])


def _describe(key: str, values: list[Any], per_layer: bool) -> str:
    name = key.rpartition(".")[2]
    if not per_layer:
        value = values[0]
        if isinstance(value, str):
            return value
        if isinstance(value, float):
            return f"{value:.2f}"
        return f"{name}={value}"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return ""
    if len(set(values)) == 1:
        return f"{name}={values[0]}"
    return f"{name}~{fmean(values):.2g}"


def _better(direction: Direction) -> str:
    return "lower is better" if direction == "minimize" else "higher is better"


def study_params(plan: Plan) -> dict[str, str]:
    """The settings a study's results depend on, as the parent run's params (MLflow keeps a
    param's first value: a resumed study keeps those of its first opening; config.yaml has the
    latest opening's whole config)."""
    config = plan.config
    params = {
        "model": config.model.name,
        "model.source": config.model.hub_id or config.model.path,
        "model.dtype": config.model.dtype,
        "objectives": ", ".join(f"{o} ({d[:3]})" for o, d in zip(plan.objectives, plan.directions)),
        "scorers": ", ".join(config.scorers),
        "search.sampler": config.search.sampler,
        "search.seed": str(config.search.seed),
        "data.calib_windows": str(config.data.calib_windows),
        "data.eval_windows": str(config.data.eval_windows if config.data.eval_windows is not None else "all"),
        "calibration.mode": config.calibration.mode,
        "serving.context_length": str(config.serving.context_length or "model"),
        "serving.batch_size": str(config.serving.batch_size),
    }
    for compressor, described in plan.space.describe().items():
        params.update({f"space.{compressor}.{name}": text for name, text in described.items()})
    return {key: value for key, value in params.items() if value is not None}


def study_description(plan: Plan) -> str:
    """What the study searches, for the parent run's description (markdown)."""
    config = plan.config
    objectives = ", ".join(f"{o} ({_better(d)})" for o, d in zip(plan.objectives, plan.directions))
    return (
        f"**autoprune study `{plan.study_name}`**: compresses model `{config.model.name}` with "
        f"{', '.join(c.name for c in plan.compressors)}, searched by {config.search.sampler} "
        f"for {config.search.n_trials} completed trials.\n\n"
        f"Objectives: {objectives}.\n\n"
        "Each trial is a child run named after what it tried; the Pareto front's runs are tagged "
        "`autoprune.is_pareto` = `true` (search: ``tags.`autoprune.is_pareto` = 'true'``). Artifacts: "
        "`pareto.json` (the front, one row per trial), `pareto.png` and `pareto.html` (the objectives), "
        "`pareto_layers.png` (per-layer values of the front), `config.yaml`."
    )


def front_summary(
    rows: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    objectives: Sequence[str],
    directions: Sequence[Direction],
    names: Mapping[int, str],
    study_name: str,
) -> str:
    """The front in plain language (markdown): its size, who is best at each objective, the
    balanced compromise and how to export it."""
    by_number = {row["trial"]: row for row in rows}
    on_front = [by_number[number] for number in front if number in by_number]
    if not on_front:
        return "No trial has completed yet."
    baselines = sum(1 for row in on_front if row.get("baseline", "-") != "-")
    lines = [
        f"**Pareto front**: {len(on_front)} of {len(rows)} completed trials ({baselines} baselines, "
        f"{len(on_front) - baselines} sampled): no other trial is at least as good in every objective and "
        "better in one."
    ]

    def point(row: Mapping[str, Any]) -> str:
        number = row["trial"]
        values = ", ".join(f"{o} {format_value(row[o])}" for o in objectives)
        return f"{names.get(number, f't{number:03d}')} ({values})"

    for objective, direction in zip(objectives, directions):
        sign = 1 if direction == "minimize" else -1
        best = min(on_front, key=lambda row: (sign * row[objective], row["trial"]))
        lines.append(f"- {'lowest' if sign == 1 else 'highest'} {objective}: {point(best)}")
    if len(objectives) > 1:
        balanced = by_number[knee({row["trial"]: [row[o] for o in objectives] for row in on_front}, directions)]
        lines.append(
            f"- balanced compromise (closest to the best of every objective): {point(balanced)}; export it with "
            f"`autoprune export study.name={study_name} pick=knee out=DIR`"
        )
    return "\n".join(lines)


def hypervolume_note(value: float, reference: Sequence[float] | None, objectives: Sequence[str]) -> str:
    """The front's hypervolume and the point it is measured from, for the parent's description."""
    if reference is None:
        return ""
    point = ", ".join(f"{o} {format_value(r)}" for o, r in zip(objectives, reference))
    return (
        f"Hypervolume of the front: {format_value(value)}, the space it dominates up to the reference point "
        f"({point}), fixed by the study's first completed trial; the metric `{HYPERVOLUME}` shows it trial by trial."
    )


def finished_description(
    plan: Plan,
    rows: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    names: Mapping[int, str],
    hypervolume: float,
    reference: Sequence[float] | None,
) -> str:
    """The parent run's description once the study has run: the front first (the UI shows a
    description's first lines), then what the study searched, then the hypervolume."""
    parts = [
        front_summary(rows, front, plan.objectives, plan.directions, names, plan.study_name),
        study_description(plan),
        hypervolume_note(hypervolume, reference, plan.objectives),
    ]
    return "\n\n".join(part for part in parts if part)
