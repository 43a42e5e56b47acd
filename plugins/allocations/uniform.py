"""Uniform allocation: every unit gets the target sparsity."""

from collections.abc import Mapping, Sequence
from typing import Any

from autoprune.plugin import Allocation, AllocationUnit, StudyContext, hookimpl


class Uniform(Allocation):
    name = "uniform"

    def ratios(
        self, target: float, units: Sequence[AllocationUnit], context: StudyContext, params: Mapping[str, Any]
    ) -> list[float]:
        return [float(target)] * len(units)


@hookimpl
def register_allocations() -> list[Allocation]:
    return [Uniform()]
