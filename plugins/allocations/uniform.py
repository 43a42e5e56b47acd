"""Uniform allocation: every decoder block gets the target sparsity."""

from collections.abc import Mapping
from typing import Any

from autoprune import hookimpl
from autoprune.components import Allocation
from autoprune.context import StudyContext


class Uniform(Allocation):
    name = "uniform"

    def ratios(self, target: float, context: StudyContext, params: Mapping[str, Any]) -> list[float]:
        return [float(target)] * len(context.layout)


@hookimpl
def register_allocations() -> list[Allocation]:
    return [Uniform()]
