"""The whole plugin contract of autoprune.

A plugin is a module with functions marked `@autoprune.hookimpl` whose names match the hooks
below. It is found through the ``autoprune`` entry-point group, so a package declares

    [project.entry-points.autoprune]
    myplugin = "my_package.my_module"

in its `pyproject.toml`, and installing it is enough for autoprune to use it. The built-in
components in `plugins/` are registered exactly this way.

Every hook is called once, when the registry is built at the start of a command, with no
arguments, and returns a list of component instances (see `autoprune.components`). Names must
be unique within a kind across all installed plugins; a clash stops the run with an error that
names both plugins. Setting ``AUTOPRUNE_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry-point discovery;
``AUTOPRUNE_PLUGINS=pkg.mod,other.mod`` loads the named modules explicitly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from autoprune.components import Allocation, Compressor, PruningMetric, Scorer

PROJECT = "autoprune"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_metrics() -> list[PruningMetric]:
    """Pruning metrics: `score(W, stats, **params)` of every weight, lowest pruned first.

    A metric is selected by its `name` in the search space (e.g.
    ``space.prune.metric.choices=[wanda]``) and used by the compressors that prune by score.
    The statistics it `needs` (the `StatKind`s: sum, sum_sq, xtx, cosine, cosine_centred; see
    `LinearStats`) are collected once per study (or per block and trial in sequential
    calibration mode); the `params` it declares are read from the compressor's space
    section, so they are searched with everything else. A metric whose pruning also changes
    the surviving weights (SparseGPT, STADE's bias fold) sets `solves` and implements
    `solve(linear, stats, ratio, pattern, journal)`, recording every change in the journal.
    Every metric must honour both unstructured ratios and N:M `SparsityPattern`s.
    """


@hookspec
def register_allocations() -> list[Allocation]:
    """Layerwise sparsity allocations: a target mean sparsity in, one ratio per decoder block out.

    Selected by name with ``space.prune.allocation``; the allocation reads its own parameters
    (such as per-layer offsets) from the same space section.
    """


@hookspec
def register_compressors() -> list[Compressor]:
    """Compressors: the transformations a trial applies to the model, each undone after scoring.

    Each top-level key of the config's `space` names a compressor; its section is that
    compressor's search space. Compressors run in the order of the keys.
    """


@hookspec
def register_scorers() -> list[Scorer]:
    """Scorers: measurements of the compressed model, each one or more named objectives.

    Selected by name in the config's `scorers` list; their objectives, with the direction each
    declares, are the objectives of the study and the axes of its Pareto front.
    """
