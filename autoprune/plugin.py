"""The public plugin API: the one module a plugin imports from.

This is the stable surface for third-party packages (and the built-in plugins in `plugins/`),
as `pytest` is over `_pytest`. A plugin writes

    from autoprune.plugin import LinearStats, PruningMetric, hookimpl

and nothing else from `autoprune`; everything else in the `autoprune` package is internal and may
move between releases without notice. The hooks themselves are documented in
`autoprune.hookspecs`.

What is here:

- `hookimpl`: the marker for hook implementations.
- The component classes a hook returns: `PruningMetric`, `Allocation`, `Compressor`, `Scorer`,
  with `SparsityPattern` and the `StatKind` and `Direction` literal types in their signatures.
- What a component receives: `StudyContext` (the model, its layout, statistics and registry),
  `Journal` (the undo log of weight edits), `LinearStats` (calibration statistics of one
  linear layer), `BlockInputs` (a decoder block's inputs for sequential calibration),
  `AllocationUnit` and `DecoderLayout` (the model's structure), `GRANULARITIES` (the allocation
  granularities), `Registry` (the installed components, given to `Compressor.check`) and
  `WeightSnapshot` (a copy of weights to restore from), `Runtime` (`StudyContext.runtime`: how the model
  runs beyond its weights, such as the KV cache `generate()` must use), `attention_shape`
  (key/value heads and head dimension of a model config), and `cache_keyword` / `returned_cache`
  (the name a model takes and returns its KV cache under, which transformers renamed).
- `ConfigError`, the error a component raises for an invalid setting, `possible_values`,
  the values one search-space entry can take, and `is_number`, whether a value is a finite
  number (not a boolean), for `check` methods.
- `progress(items, description, total)`: a progress bar over long work (on stderr, when it is a
  terminal and the config's `progress` is on).
"""

from __future__ import annotations

from autoprune.calibration import BlockInputs, LinearStats
from autoprune.components import (
    Allocation,
    Compressor,
    Direction,
    PruningMetric,
    Scorer,
    SparsityPattern,
    StatKind,
)
from autoprune.context import StudyContext
from autoprune.errors import ConfigError
from autoprune.hookspecs import hookimpl
from autoprune.journal import Journal
from autoprune.model import GRANULARITIES, AllocationUnit, DecoderLayout
from autoprune.progress import progress
from autoprune.registry import Registry
from autoprune.runtime import Runtime, attention_shape, cache_keyword, returned_cache
from autoprune.snapshot import WeightSnapshot
from autoprune.space import possible_values
from autoprune.validation import is_number

__all__ = [
    "GRANULARITIES",
    "Allocation",
    "AllocationUnit",
    "BlockInputs",
    "Compressor",
    "ConfigError",
    "DecoderLayout",
    "Direction",
    "Journal",
    "LinearStats",
    "PruningMetric",
    "Registry",
    "Runtime",
    "Scorer",
    "SparsityPattern",
    "StatKind",
    "StudyContext",
    "WeightSnapshot",
    "attention_shape",
    "cache_keyword",
    "hookimpl",
    "is_number",
    "possible_values",
    "progress",
    "returned_cache",
]
