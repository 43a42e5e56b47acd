"""The whole plugin contract of autoprune.

A plugin is a module with functions marked `@hookimpl` whose names match the hooks below. It
imports everything it uses (`hookimpl`, the component classes, `StudyContext`, `LinearStats`, ...)
from `autoprune.plugin`, the stable public surface; the rest of `autoprune` may move. It is found
through the ``autoprune`` entry-point group, so a package declares

    [project.entry-points.autoprune]
    myplugin = "my_package.my_module"

in its `pyproject.toml`, and installing it is enough for autoprune to use it. The built-in
components in `plugins/` are registered exactly this way.

Every hook is called once, when the registry is built at the start of a command, with no
arguments, and returns a list of component instances (classes in `autoprune.plugin`). Names must
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
    """Layerwise sparsity allocations: a target mean sparsity in, one ratio per allocation unit out.

    Selected by name with ``space.prune.allocation``. `ratios(target, units, context, params)`
    gets the units (`AllocationUnit`: a decoder block, or one linear sublayer when
    ``space.prune.granularity=linear``, each with its `slot` in the dense model's numbering)
    and must return ratios in [0, 0.99] whose size-weighted mean is exactly `target`. It reads
    its own `params` (per-layer offsets, say, indexed by `slot`) from the same space section,
    validated by `check`; the dense-model statistics it `needs` are collected up front in
    either calibration mode. Results that depend only on the dense model belong in
    `context.cache`, computed in `prepare(context, units, section)`, which runs once per study
    before any trial: within a trial, a compressor before prune may already have changed weights.
    """


@hookspec
def register_compressors() -> list[Compressor]:
    """Compressors: the transformations a trial applies to the model, each undone after scoring.

    Each top-level key of the config's `space` names a compressor; its section is that
    compressor's search space. Compressors run in the order of the keys. `apply(context,
    params, journal)` changes the model in place and records every change in the journal
    (which also tells later compressors which tensors were changed); a compressor that
    removes whole blocks swaps the model's ModuleList and `context.layout` (via
    `DecoderLayout.without`) through `journal.on_undo`. A compressor that changes how the model
    runs rather than its weights (the KV cache's attention function and the cache `generate()` must
    use) installs the function through `journal.on_undo` and puts the rest on `context.runtime` with
    `Runtime.set(journal, ...)`, so every scorer sees it and the trial undoes it. It returns facts to log: scalars become
    MLflow metrics, lists become per-layer tables (`<compressor>_layers.json`) and plots.
    `stats_needed` names the calibration statistics to collect up front, `prepare` computes
    once on the dense model what trials share (and refuses what cannot work on this model),
    `per_layer_count` the length of its per-layer search families, `summary` a line for the
    study log.

    The keys its section may hold are part of the contract: `params` lists the compressor's own,
    and `section_keys(registry)` adds those it hands on (the prune compressor adds every installed
    metric's and allocation's `params`). The core refuses any other key before compute, with the
    list of known ones; `check(section, registry)` then validates the values (raising
    `ConfigError`, one line: the key, the value, the fix), also before the model loads, and
    `check_model(section, model_config)` judges the section against the checkpoint's config.json
    (a removal count against `num_hidden_layers`, say) before the weights load.
    """


@hookspec
def register_scorers() -> list[Scorer]:
    """Scorers: measurements of the compressed model, each one or more named objectives.

    Selected by name in the config's `scorers` list; their objectives, with the direction each
    declares, are the objectives of the study and the axes of its Pareto front. A scorer measures
    the model as the trial's compressors left it, runtime included: calling the model runs any
    attention function a compressor installed; a scorer that generates passes
    `context.runtime.new_cache()` under `cache_keyword(model)` (None: transformers' default cache); one
    that sizes memory asks `context.kv_cache_bytes(tokens, batch)` at `context.serving_shape()`.
    """
