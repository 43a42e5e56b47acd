"""One trial, independent of the search backend: compress, score, restore.

`compress` is the step a trial shares with export and `api.reproduce`, which keep what it did:
only `run_trial` restores the dense model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autoprune.components import FULL_STAGE, Compressor, Scorer
from autoprune.context import StudyContext
from autoprune.errors import AutopruneError
from autoprune.fidelity import Gate
from autoprune.journal import Journal


@dataclass
class TrialResult:
    values: dict[str, float]  # objective name -> value
    info: dict[str, Any]  # facts the compressors reported, e.g. per-layer ratios
    seconds: dict[str, float] = field(default_factory=dict)  # compress / score / restore
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # "<scorer>/<stage>" -> partial values


class TrialError(AutopruneError):
    """A trial could not be completed; the study records it as failed and goes on."""


@torch.no_grad()
def compress(
    context: StudyContext,
    compressors: Sequence[Compressor],
    params: Mapping[str, Mapping[str, Any]],
    journal: Journal,
) -> dict[str, Any]:
    """Apply every compressor, in order, with its section of `params`, recording each change in
    `journal`; returns what they report as `<compressor>.<key>`."""
    info: dict[str, Any] = {}
    for compressor in compressors:
        for key, value in compressor.apply(context, params[compressor.name], journal).items():
            info[f"{compressor.name}.{key}"] = value
    return info


def _staged(scorer: Scorer) -> bool:
    return type(scorer).score_in_stages is not Scorer.score_in_stages


@torch.no_grad()
def measure(
    context: StudyContext, scorers: Sequence[Scorer], gate: Gate | None = None
) -> tuple[dict[str, float], dict[str, Any], dict[str, dict[str, float]]]:
    """Every scorer's objectives (each must be present and finite), its further figures as
    `<scorer>.<key>`, and the partial values of its cheap stages as `"<scorer>/<stage>"`.

    With a `gate` (multi-fidelity, `autoprune.fidelity`) the scorers with one stage run first and
    a staged scorer's stages are checked as they come: the gate raises `TrialStopped` to stop the
    trial. Without one every scorer measures in full, in the given order, at no extra cost."""
    values: dict[str, float] = {}
    info: dict[str, Any] = {}
    stages: dict[str, dict[str, float]] = {}
    ordered = sorted(scorers, key=_staged) if gate else scorers
    for scorer in ordered:
        if gate and _staged(scorer):
            for stage, partial in scorer.score_in_stages(context):
                if stage == FULL_STAGE:
                    measured = partial
                    break
                key = f"{scorer.name}/{stage}"
                stages[key] = {name: float(partial[name]) for name in scorer.objectives if name in partial}
                gate.check(key, stages[key], values, stages)
        else:
            measured = scorer.score(context)
        missing = set(scorer.objectives) - set(measured)
        if missing:
            raise TrialError(f"scorer {scorer.name!r} returned no value for {sorted(missing)}")
        for name in scorer.objectives:
            value = float(measured[name])
            if not math.isfinite(value):
                raise TrialError(f"scorer {scorer.name!r} returned {value} for {name!r}")
            values[name] = value
        info.update({f"{scorer.name}.{k}": v for k, v in measured.items() if k not in scorer.objectives})
    return values, info, stages


@torch.no_grad()
def run_trial(
    context: StudyContext,
    compressors: Sequence[Compressor],
    scorers: Sequence[Scorer],
    params: Mapping[str, Mapping[str, Any]],
    gate: Gate | None = None,
) -> TrialResult:
    """Apply every compressor to the dense model, score it (stopped by `gate` at a cheap stage,
    `TrialStopped`), and always restore the dense weights."""
    journal = Journal()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    try:
        info = compress(context, compressors, params, journal)
        seconds["compress"] = time.perf_counter() - started
        values, measured, stages = measure(context, scorers, gate)
        info.update(measured)
        seconds["score"] = time.perf_counter() - started - seconds["compress"]
    finally:
        restore_started = time.perf_counter()
        journal.restore()
        seconds["restore"] = time.perf_counter() - restore_started
    return TrialResult(values=values, info=info, seconds=seconds, stages=stages)
