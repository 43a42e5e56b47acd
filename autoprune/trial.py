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

from autoprune.components import Compressor, Scorer
from autoprune.context import StudyContext
from autoprune.errors import AutopruneError
from autoprune.journal import Journal


@dataclass
class TrialResult:
    values: dict[str, float]  # objective name -> value
    info: dict[str, Any]  # facts the compressors reported, e.g. per-layer ratios
    seconds: dict[str, float] = field(default_factory=dict)  # compress / score / restore


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


@torch.no_grad()
def measure(context: StudyContext, scorers: Sequence[Scorer]) -> tuple[dict[str, float], dict[str, Any]]:
    """Every scorer's objectives (each must be present and finite) and its further figures as
    `<scorer>.<key>`."""
    values: dict[str, float] = {}
    info: dict[str, Any] = {}
    for scorer in scorers:
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
    return values, info


@torch.no_grad()
def run_trial(
    context: StudyContext,
    compressors: Sequence[Compressor],
    scorers: Sequence[Scorer],
    params: Mapping[str, Mapping[str, Any]],
) -> TrialResult:
    """Apply every compressor to the dense model, score it, and always restore the dense weights."""
    journal = Journal()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    try:
        info = compress(context, compressors, params, journal)
        seconds["compress"] = time.perf_counter() - started
        values, measured = measure(context, scorers)
        info.update(measured)
        seconds["score"] = time.perf_counter() - started - seconds["compress"]
    finally:
        restore_started = time.perf_counter()
        journal.restore()
        seconds["restore"] = time.perf_counter() - restore_started
    return TrialResult(values=values, info=info, seconds=seconds)
