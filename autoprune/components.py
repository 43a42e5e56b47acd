"""The four kinds of component a plugin can provide, as small abstract classes.

A plugin returns instances of these from the hooks in `autoprune.hookspecs`. The core only
ever calls the methods declared here, so anything that implements them — built-in or
third-party — is a first-class part of the search.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor, nn

    from autoprune.calibration import LinearStats
    from autoprune.context import StudyContext
    from autoprune.journal import Journal
    from autoprune.model import AllocationUnit, DecoderLayout
    from autoprune.registry import Registry

Direction = Literal["minimize", "maximize"]
StatKind = Literal["sum", "sum_sq", "xtx", "cosine", "cosine_centred"]


@dataclass(frozen=True)
class SparsityPattern:
    """Unstructured (n = m = 0), or N:M: keep the n highest scores in every m consecutive inputs of a row."""

    n: int = 0
    m: int = 0

    @classmethod
    def parse(cls, text: str) -> SparsityPattern:
        if text == "unstructured":
            return cls()
        try:
            n, m = (int(part) for part in text.split(":"))
        except ValueError:
            raise ValueError(f"sparsity pattern {text!r} is neither 'unstructured' nor N:M such as '2:4'") from None
        if not 0 < n < m:
            raise ValueError(f"sparsity pattern {text!r} needs 0 < N < M")
        return cls(n, m)

    @property
    def is_n_of_m(self) -> bool:
        return self.m > 0

    @property
    def sparsity(self) -> float:
        """The sparsity an N:M pattern implies."""
        return 1 - self.n / self.m if self.is_n_of_m else 0.0

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_n_of_m else "unstructured"


class PruningMetric(ABC):
    """Scores every weight of a linear layer; the lowest scores are pruned.

    `comparison` says which weights compete for survival: ``"row"`` ranks within each output
    row (Wanda), ``"matrix"`` across the whole matrix (magnitude); N:M patterns always
    compare within groups of M inputs of a row. `needs` names the calibration statistics
    `score` reads. `params` names the metric's own parameters: the compressor passes the
    trial's values of those keys of its space section as keyword arguments, so they can be
    searched like any other parameter.

    Metrics whose pruning also changes the surviving weights (SparseGPT's update, STADE's
    bias fold) set `solves` and implement `solve`; the compressor then hands them the whole
    linear instead of masking by score.
    """

    name: ClassVar[str]
    comparison: ClassVar[Literal["row", "matrix"]] = "row"
    needs: ClassVar[frozenset[StatKind]] = frozenset()
    params: ClassVar[tuple[str, ...]] = ()
    solves: ClassVar[bool] = False

    @abstractmethod
    def score(self, weight: Tensor, stats: LinearStats, **params: Any) -> Tensor:
        """Return a tensor shaped like `weight`; must not modify `weight`."""

    def check(self, space: Mapping[str, Any]) -> None:  # noqa: B027
        """Raise `ConfigError` if the space section gives this metric's `params` invalid values."""

    def solve(
        self,
        linear: nn.Linear,
        stats: LinearStats,
        ratio: float,
        pattern: SparsityPattern,
        journal: Journal,
        **params: Any,
    ) -> int:
        """Prune `linear` in place through `journal` (only when `solves`); return how many weights were removed."""
        raise NotImplementedError(f"metric {self.name!r} does not solve; the compressor masks by its score")


class Allocation(ABC):
    """Turns a target mean sparsity into one sparsity ratio per allocation unit.

    A unit is a decoder block or a single linear sublayer, as `space.prune.granularity` says;
    every linear of a unit is pruned to the unit's ratio. `needs` names the dense-model
    statistics the allocation reads (collected up front in either calibration mode); `params`
    names the keys of the compressor's section it reads, validated by `check`.
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[StatKind]] = frozenset()
    params: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def ratios(
        self, target: float, units: Sequence[AllocationUnit], context: StudyContext, params: Mapping[str, Any]
    ) -> list[float]:
        """One ratio per unit, each in [0, 0.99], whose mean weighted by the units' sizes is `target`."""

    def check(self, space: Mapping[str, Any]) -> None:  # noqa: B027
        """Raise `ConfigError` if the space section gives this allocation's `params` invalid values."""

    def prepare(self, context: StudyContext, units: Sequence[AllocationUnit], space: Mapping[str, Any]) -> None:  # noqa: B027
        """Compute, on the dense model, what depends only on it (outlier scores, say), once per study."""


class Compressor(ABC):
    """Changes the model for one trial, recording every change in the journal so it can be undone.

    The compressor's entry in the search space (`space.<name>` in the config) is the data it
    is configured by: `check` validates it before any compute, `apply` receives one sample.

    The keys that section may hold are declared, not guessed: `params` names the compressor's
    own, and `section_keys` adds those of the components it hands the section to (a metric's or
    an allocation's `params`). Before any compute the core refuses every other key, naming the
    known ones, so a typo (`patern` for `pattern`) stops the run instead of being ignored.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[str, ...]] = ()

    def section_keys(self, registry: Registry) -> frozenset[str]:
        """Every key `space.<name>` may hold: `params`, plus the `params` of any metric, allocation or
        other component the compressor passes its section to (all installed ones it may select)."""
        return frozenset(self.params)

    def check(self, space: Mapping[str, Any], registry: Registry) -> None:  # noqa: B027
        """Raise `ConfigError` if the space section is invalid. Called before the model loads."""

    def stats_needed(self, space: Mapping[str, Any], registry: Registry, mode: str) -> set[StatKind]:
        """Dense-model statistics the trials of this space will read, collected once per study.

        `mode` is the calibration mode: under "sequential" a compressor collects what its
        metrics read block by block itself, and asks here only for what must come from the
        dense model (such as an allocation's outlier ratios).
        """
        return set()

    def check_model(self, space: Mapping[str, Any], model_config: Mapping[str, Any]) -> None:  # noqa: B027
        """Raise `ConfigError` if the section cannot work on this model, judged from its config.json
        (`num_hidden_layers`, `hidden_size`, ...) before the model loads; not called when that file
        is not at hand (a hub model that is not cached), where `prepare` is the check."""

    def prepare(self, context: StudyContext, space: Mapping[str, Any]) -> None:  # noqa: B027
        """Called once per study before any trial, on the dense model, for every section a trial may
        run (the space's and each baseline's): compute what trials share, and refuse what cannot
        work on this model with `ConfigError`."""

    def summary(self, space: Mapping[str, Any], layout: DecoderLayout) -> str:
        """One line the study logs at start, saying how this section will act on this model ("" for none)."""
        return ""

    def per_layer_count(self, space: Mapping[str, Any], layout: DecoderLayout) -> int:
        """How many values a per-layer family of this compressor's section has (default: one per block)."""
        return len(layout)

    @abstractmethod
    def apply(self, context: StudyContext, params: Mapping[str, Any], journal: Journal) -> dict[str, Any]:
        """Compress `context.model` in place per `params`; return facts worth logging (scalars or lists)."""


class Scorer(ABC):
    """Measures the (compressed) model and returns one value per objective it declares.

    A scorer may take settings from its own config section, `scoring.<name>`: `params` maps
    each key that section may hold to its default (any other key is refused before compute),
    `check` validates the values, and the study works with a bound copy (`bind`) whose
    `settings` hold the defaults overlaid with the section. `objectives_for(settings)` may make
    the objectives depend on them (a latency scorer timing prefill or decode, say).

    It honours `context.runtime` (see `autoprune.runtime`): the cache a compressor set for
    `generate()`, and the KV cache's size through `context.kv_cache_bytes`.
    """

    name: ClassVar[str]
    objectives: Mapping[str, Direction]  # the bound copy's come from objectives_for(settings)
    params: ClassVar[Mapping[str, Any]] = {}
    settings: Mapping[str, Any] = {}

    def check(self, section: Mapping[str, Any]) -> None:  # noqa: B027
        """Raise `ConfigError` if `scoring.<name>` gives invalid values (its keys are already known)."""

    def objectives_for(self, settings: Mapping[str, Any]) -> Mapping[str, Direction]:
        """The objectives this scorer measures with `settings` (default: the class's `objectives`)."""
        return self.objectives

    def bind(self, section: Mapping[str, Any]) -> Scorer:
        """A copy configured by `section` (`scoring.<name>`, already checked), as studies use it."""
        bound = copy.copy(self)
        bound.settings = {**self.params, **section}
        bound.objectives = dict(self.objectives_for(bound.settings))
        return bound

    def prepare(self, context: StudyContext) -> dict[str, float]:
        """Called once per study (and process) before any trial, on the dense model: measure what
        trials are compared with (the dense model's latency, say). Returns figures the study logs on
        its parent run as `dense.<name>`."""
        return {}

    @abstractmethod
    def score(self, context: StudyContext) -> dict[str, float]:
        """Return a value for every key of `objectives`; further keys are logged as the trial's
        metrics (`<scorer>.<key>`, e.g. a spread or a ratio to the dense model), not optimised."""

    def score_in_stages(self, context: StudyContext) -> Iterator[tuple[str, dict[str, float]]]:
        """Multi-fidelity: cheap partial measurements first, each `(stage, {objective: partial
        value})`, comparable across trials at the same stage (same data, lower fidelity); the last
        is `("full", what score returns)`. The study may stop the trial after any stage but the
        last (`autoprune.fidelity`). By default a scorer has the one full stage."""
        yield FULL_STAGE, self.score(context)


FULL_STAGE = "full"
