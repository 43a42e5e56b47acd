"""Pruning by metric: a metric ranks the weights, an allocation sets each block's ratio.

Its space section (`space.prune`) takes:
    metric      the pruning metric (a name or {choices: [...]}); the keys the metric lists in
                its `params` are passed to it
    sparsity    the target mean sparsity, in [0, 1); ignored by N:M patterns
    pattern     "unstructured" (default) or N:M such as "2:4" / "4:8" (keep N of every M inputs)
    allocation  how the mean is spread over the units (default: uniform); see plugins/allocations/
    granularity "block" (default): a unit is a decoder block and all its linears share a ratio;
                "linear": every linear sublayer is a unit with its own ratio
    ...         whatever the metric and the allocation read, e.g. `offsets` for `searched`
In sequential calibration mode the blocks are pruned in order, each with statistics of its
inputs as the already-pruned blocks before it produce them. In a study, row-wise metrics under
dense-once statistics take the fast path of `cached_ranks.py` (a one-shot `api.prune` does not:
there is no second trial to pay the cache back).
"""

from collections.abc import Mapping
from typing import Any

from autoprune.plugin import (
    GRANULARITIES,
    BlockInputs,
    Compressor,
    ConfigError,
    DecoderLayout,
    Journal,
    Registry,
    SparsityPattern,
    StatKind,
    StudyContext,
    hookimpl,
    is_number,
    possible_values,
    progress,
)
from autoprune_plugins.allocations.exact_mean import MAX_RATIO
from autoprune_plugins.compressors.cached_ranks import CachedRanks
from autoprune_plugins.sparsity import prune_mask


class Prune(Compressor):
    name = "prune"
    params = ("metric", "sparsity", "pattern", "allocation", "granularity")

    def section_keys(self, registry: Registry) -> frozenset[str]:
        """Its own keys, and the `params` of every installed metric and allocation: the section
        is handed to whichever of them a trial (or a baseline) picks."""
        delegates = [registry.metric(name) for name in registry.names("metric")]
        delegates += [registry.allocation(name) for name in registry.names("allocation")]
        return frozenset(self.params).union(*(component.params for component in delegates))

    def check(self, space: Mapping[str, Any], registry: Registry) -> None:
        for key in ("metric", "sparsity"):
            if key not in space:
                raise ConfigError(f"space.prune.{key} is missing; the prune compressor needs a {key}")
        for key, default in (("metric", None), ("allocation", "uniform"), ("granularity", "block")):
            for value in possible_values(space.get(key, default)):
                if not isinstance(value, str):
                    raise ConfigError(f"space.prune.{key} has {value!r}; give a name, or {{choices: [name, ...]}}")
        for metric in possible_values(space["metric"]):
            registry.metric(metric).check(space)
        for allocation in possible_values(space.get("allocation", "uniform")):
            registry.allocation(allocation).check(space)
        for granularity in possible_values(space.get("granularity", "block")):
            if granularity not in GRANULARITIES:
                raise ConfigError(
                    f"space.prune.granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"
                )
        for sparsity in possible_values(space["sparsity"]):
            if not is_number(sparsity) or not 0.0 <= sparsity <= MAX_RATIO:
                raise ConfigError(
                    f"space.prune.sparsity takes values in [0, 1) (at most {MAX_RATIO}), got {sparsity!r}"
                )
        for pattern in possible_values(space.get("pattern", "unstructured")):
            try:
                SparsityPattern.parse(str(pattern))
            except ValueError as error:
                raise ConfigError(f"space.prune.pattern: {error}") from None
        granularities = possible_values(space.get("granularity", "block"))
        per_layer = [k for k, v in space.items() if isinstance(v, Mapping) and v.get("per_layer")]
        if len(granularities) > 1 and per_layer:
            raise ConfigError(
                f"space.prune.granularity is searched, but {', '.join(per_layer)} is per layer: its values would "
                "mean blocks in some trials and linears in others; fix the granularity"
            )
        offsets = space.get("offsets")
        if offsets is not None and not (isinstance(offsets, Mapping) and offsets.get("per_layer")):
            raise ConfigError(
                "space.prune.offsets must be a per-layer distribution, e.g. {low: -0.1, high: 0.1, per_layer: true}"
            )

    def stats_needed(self, space: Mapping[str, Any], registry: Registry, mode: str) -> set[StatKind]:
        allocations = (registry.allocation(name) for name in possible_values(space.get("allocation", "uniform")))
        needed = set().union(*(allocation.needs for allocation in allocations))
        if mode == "dense-once":
            needed |= set().union(*(registry.metric(name).needs for name in possible_values(space["metric"])))
        return needed

    def prepare(self, context: StudyContext, space: Mapping[str, Any]) -> None:
        """Let every allocation the section can pick score the dense model once."""
        for name in possible_values(space.get("allocation", "uniform")):
            allocation = context.registry.allocation(name)
            for granularity in possible_values(space.get("granularity", "block")):
                allocation.prepare(context, context.layout.units(str(granularity)), space)

    def summary(self, space: Mapping[str, Any], layout: DecoderLayout) -> str:
        allocations = ", ".join(str(a) for a in possible_values(space.get("allocation", "uniform")))
        parts = []
        for granularity in possible_values(space.get("granularity", "block")):
            units = len(layout.units(str(granularity)))
            if granularity == "block":
                parts.append(f"one ratio per decoder block ({units} units; all linears of a block share it)")
            else:
                parts.append(f"one ratio per linear sublayer ({units} units)")
        return f"allocation {allocations}: {' or '.join(parts)}"

    def per_layer_count(self, space: Mapping[str, Any], layout: DecoderLayout) -> int:
        """Per-layer families (offsets, steps) have one value per allocation unit of the dense model."""
        granularities = possible_values(space.get("granularity", "block"))
        return max(len(layout.units(str(granularity))) for granularity in granularities)

    def apply(self, context: StudyContext, params: Mapping[str, Any], journal: Journal) -> dict[str, Any]:
        metric = context.registry.metric(params["metric"])
        pattern = SparsityPattern.parse(str(params.get("pattern", "unstructured")))
        units = context.layout.units(str(params.get("granularity", "block")))
        if pattern.is_n_of_m:
            ratios = [pattern.sparsity] * len(units)
        else:
            allocation = context.registry.allocation(params.get("allocation", "uniform"))
            ratios = allocation.ratios(float(params["sparsity"]), units, context, params)
        ratio_of = {name: ratio for unit, ratio in zip(units, ratios) for name in unit.linears}
        metric_params = {key: params[key] for key in metric.params if key in params}
        sequential = context.calibration_mode == "sequential"
        if sequential:
            inputs = BlockInputs(context.model, context.layout, context.calibration, context.calibration_batch_size)
        cacheable = metric.comparison == "row" and not pattern.is_n_of_m and not sequential and context.repeated
        pruned = total = 0
        blocks = context.layout.linears
        for index, block in progress(enumerate(blocks), f"pruning ({metric.name})", total=len(blocks), unit="block"):
            block_stats = inputs.collect(index, metric.needs) if sequential else context.stats
            for name, linear in block.items():
                stats, ratio = block_stats[name], ratio_of[name]
                if metric.solves:
                    pruned += metric.solve(linear, stats, ratio, pattern, journal, **metric_params)
                elif cacheable and not journal.changed(linear.weight):
                    pruned += CachedRanks.of(context).prune(metric, metric_params, name, linear, stats, ratio, journal)
                else:
                    mask = prune_mask(
                        metric.score(linear.weight, stats, **metric_params), ratio, pattern, metric.comparison
                    )
                    journal.zero(linear.weight, mask)
                    pruned += int(mask.sum())
                total += linear.weight.numel()
            if sequential:
                inputs.advance(index)
        return {"unit": [unit.label for unit in units], "ratio": ratios, "achieved_sparsity": pruned / total}


@hookimpl
def register_compressors() -> list[Compressor]:
    return [Prune()]
