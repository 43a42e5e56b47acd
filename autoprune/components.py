"""The four kinds of component a plugin can provide, as small abstract classes.

A plugin returns instances of these from the hooks in `autoprune.hookspecs`. The core only
ever calls the methods declared here, so anything that implements them — built-in or
third-party — is a first-class part of the search.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor

    from autoprune.calibration import LinearStats
    from autoprune.context import StudyContext
    from autoprune.journal import Journal
    from autoprune.registry import Registry

Direction = Literal["minimize", "maximize"]
StatKind = Literal["sum", "sum_sq", "xtx"]


class PruningMetric(ABC):
    """Scores every weight of a linear layer; the lowest scores are pruned.

    `comparison` says which weights compete for survival: ``"row"`` ranks within each output
    row (Wanda), ``"matrix"`` across the whole matrix (magnitude). `needs` names the
    calibration statistics `score` reads. `params` names the metric's own parameters: the
    compressor passes the trial's values of those keys of its space section as keyword
    arguments, so they can be searched like any other parameter.
    """

    name: ClassVar[str]
    comparison: ClassVar[Literal["row", "matrix"]] = "row"
    needs: ClassVar[frozenset[StatKind]] = frozenset()
    params: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def score(self, weight: Tensor, stats: LinearStats, **params: Any) -> Tensor:
        """Return a tensor shaped like `weight`; must not modify `weight`."""


class Allocation(ABC):
    """Turns a target mean sparsity into one sparsity ratio per decoder block."""

    name: ClassVar[str]

    @abstractmethod
    def ratios(self, target: float, context: StudyContext, params: Mapping[str, Any]) -> list[float]:
        """One ratio per block of `context.layout`; their parameter-weighted mean is `target`."""


class Compressor(ABC):
    """Changes the model for one trial, recording every change in the journal so it can be undone.

    The compressor's entry in the search space (`space.<name>` in the config) is the data it
    is configured by: `check` validates it before any compute, `apply` receives one sample.
    """

    name: ClassVar[str]

    def check(self, space: Mapping[str, Any], registry: Registry) -> None:  # noqa: B027
        """Raise `ConfigError` if the space section is invalid. Called before the model loads."""

    def stats_needed(self, space: Mapping[str, Any], registry: Registry) -> set[StatKind]:
        """Calibration statistics the trials of this space will read; collected once per study."""
        return set()

    @abstractmethod
    def apply(self, context: StudyContext, params: Mapping[str, Any], journal: Journal) -> dict[str, Any]:
        """Compress `context.model` in place per `params`; return facts worth logging (scalars or lists)."""


class Scorer(ABC):
    """Measures the (compressed) model and returns one value per objective it declares."""

    name: ClassVar[str]
    objectives: ClassVar[Mapping[str, Direction]]

    @abstractmethod
    def score(self, context: StudyContext) -> dict[str, float]:
        """Return a value for every key of `objectives`."""
