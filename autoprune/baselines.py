"""The hand-made configurations every new study evaluates first, so its Pareto front can never be
worse than them:

- pruning: each configured allocation (uniform, OWL) with each metric the space offers, at each
  configured target sparsity, unstructured. A prune baseline fixes the prune section's `metric`,
  `sparsity`, `allocation` and `pattern` and runs the prune compressor alone (no layer removal or
  other compressor in a baseline trial). Parameters whose `when` no longer holds (the `offsets`
  of the searched allocation) are then not sampled at all.
- KV cache: when the space has a `kv_cache` section, that compressor alone with the keys and
  values of every layer at each of `baselines.kv_bits` (uniform KV, as KIVI quantizes), through
  the section's `bits` when it uses that shorthand, else `key_bits` and `value_bits`.

Values of sampled parameters are enqueued in Optuna (so the sampler learns from the baseline like
from any trial), per-layer families too when the checkpoint's config.json gives the number of
blocks before the model loads; values of constants (and of per-layer families otherwise) are
overrides applied to the trial's sample. A baseline the space does not admit is skipped, with an
info line.
"""

from __future__ import annotations

import logging
from typing import Any

from autoprune.config import BaselinesConfig
from autoprune.search import Baseline
from autoprune.space import Parameter, SearchSpace

log = logging.getLogger("autoprune")

PRUNE = "prune"
KV_CACHE = "kv_cache"


def _options(parameter: Parameter | None, default: Any) -> list[Any]:
    if parameter is None:
        return [default]
    if parameter.kind == "constant":
        return [parameter.value]
    return list(parameter.choices)


def _admits(parameter: Parameter, value: Any) -> bool:
    if parameter.kind == "categorical":
        return value in parameter.choices
    return parameter.low <= value <= parameter.high


def build_baselines(space: SearchSpace, settings: BaselinesConfig, blocks: int | None = None) -> list[Baseline]:
    """The prune baselines, then the KV-cache ones, in the order a new study queues them."""
    return prune_baselines(space, settings) + kv_baselines(space, settings.kv_bits, blocks)


def prune_baselines(space: SearchSpace, settings: BaselinesConfig) -> list[Baseline]:
    """`<allocation> <metric> <sparsity>`: the prune compressor alone, unstructured."""
    if PRUNE not in space.sections or not settings.allocations:
        return []
    section = space.section(PRUNE)
    pattern = section.get("pattern")
    if pattern is not None and "unstructured" not in _options(pattern, None):
        log.info("baselines: none, the space prunes only N:M patterns, where the allocation does not apply")
        return []
    sparsity = section["sparsity"]
    sparsities = [sparsity.value] if sparsity.kind == "constant" else list(settings.sparsities)
    baselines = []
    for target in sparsities:
        for allocation in settings.allocations:
            for metric in _options(section.get("metric"), None):
                fixed = {"metric": metric, "sparsity": target, "allocation": allocation, "pattern": "unstructured"}
                params, overrides, admitted = {}, {}, True
                for name, value in fixed.items():
                    parameter = section.get(name)
                    if parameter is None or parameter.kind == "constant":
                        overrides[name] = value
                    elif _admits(parameter, value):
                        params[parameter.key] = value
                    else:
                        admitted = False
                label = f"{allocation} {metric} {target:g}"
                if admitted:
                    baselines.append(Baseline(label, params, {PRUNE: overrides}))
                else:
                    log.info(f"baselines: skipping {label}, outside the search space")
    return baselines


def kv_baselines(space: SearchSpace, widths: list[int], blocks: int | None = None) -> list[Baseline]:
    """`uniform KV <b>-bit` for each width b: the kv_cache compressor alone, all layers at b; per-layer
    families are enqueued layer by layer when the model's number of `blocks` is known."""
    if KV_CACHE not in space.sections:
        return []
    section = space.section(KV_CACHE)
    names = ("bits",) if "bits" in section else ("key_bits", "value_bits")
    switch = section.get("quantize")
    if switch is not None and True not in _options(switch, None):
        log.info(f"baselines: skipping uniform KV, space.{KV_CACHE}.quantize is false")
        return []
    baselines = []
    for bits in widths:
        label = f"uniform KV {bits}-bit"
        params, overrides = {}, {}
        if switch is not None and switch.kind != "constant":
            params[switch.key] = True  # the bits are sampled only when the cache is quantized
        for name in names:
            parameter = section.get(name)
            if parameter is None or bits not in _options(parameter, None):
                why = "is not set" if parameter is None else f"does not offer {bits}"
                log.info(f"baselines: skipping {label}, space.{KV_CACHE}.{name} {why}")
                break
            if parameter.kind == "constant" or (parameter.per_layer and blocks is None):
                overrides[name] = bits
            elif parameter.per_layer:
                params.update({f"{parameter.key}.{layer}": bits for layer in range(blocks)})
            else:
                params[parameter.key] = bits
        else:
            baselines.append(Baseline(label, params, {KV_CACHE: overrides}))
    return baselines
