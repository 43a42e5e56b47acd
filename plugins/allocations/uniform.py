"""Uniform allocation: every unit gets the target sparsity."""

from collections.abc import Mapping, Sequence
from typing import Any

from autoprune import hookimpl
from autoprune.components import Allocation
from autoprune.context import StudyContext
from autoprune.model import AllocationUnit


class Uniform(Allocation):
    name = "uniform"

    def ratios(
        self, target: float, units: Sequence[AllocationUnit], context: StudyContext, params: Mapping[str, Any]
    ) -> list[float]:
        return [float(target)] * len(units)


@hookimpl
def register_allocations() -> list[Allocation]:
    return [Uniform()]
