"""A plain Python API for one pruning, no search: the same components a trial uses.

from autoprune import api
model, tokenizer = api.load("autoprune/assets/tiny-opt")          # or a hub id
calibration = api.windows(tokenizer, text, context=128, count=128)  # token windows
api.prune(model, calibration, metric="wanda", sparsity=0.5)        # or pattern="2:4"
api.perplexity(model, token_ids)                                   # 1-D ids or 2-D windows

model, new_cache = api.load_compressed("exported")                 # a directory `autoprune export` wrote
model.generate(ids, cache=new_cache())                             # with the searched KV cache
                                                                   # (past_key_values= before transformers renamed it)
model, new_cache = api.reproduce("exported/recipe.yaml")           # rebuilt from the dense model
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from autoprune.builder import apply_sample, build_context
from autoprune.calibration import collect_stats
from autoprune.checkpoint import apply_runtime, default_cache, load_checkpoint
from autoprune.config import AutopruneConfig
from autoprune.context import StudyContext
from autoprune.data import calibration_windows, evaluation_windows, tokenize
from autoprune.errors import ConfigError
from autoprune.journal import Journal
from autoprune.model import decoder_layout, load_model, model_context
from autoprune.plan import prepare
from autoprune.recipe import read_recipe, windows_hash
from autoprune.registry import Registry, build_registry
from autoprune.search import Baseline


def load(source: str, dtype: str = "float32", device: str = "cpu") -> tuple[nn.Module, Any]:
    """Model and tokenizer from a local checkpoint directory or a Hugging Face hub id."""
    is_local = Path(source).is_dir()
    return load_model(source if is_local else None, None if is_local else source, dtype, device)


def windows(tokenizer: Any, text: str, context: int, count: int, seed: int = 0) -> Tensor:
    """`count` calibration windows of `context` tokens at seeded random offsets of `text`."""
    return calibration_windows(tokenize(tokenizer, text), context, count, seed)


def _context(model: nn.Module, calibration: Tensor, kinds: set[str], mode: str, registry: Registry):
    layout = decoder_layout(model)
    stats = collect_stats(model, layout, calibration, kinds) if kinds or mode == "dense-once" else {}
    return StudyContext(model, None, layout, calibration, calibration[:0], stats, registry, mode, repeated=False)


@torch.no_grad()
def prune(
    model: nn.Module,
    calibration: Tensor,
    metric: str = "wanda",
    sparsity: float = 0.5,
    pattern: str = "unstructured",
    mode: str = "sequential",
    **params: Any,
) -> dict[str, Any]:
    """Prune `model` in place, for good; returns what the compressor reports (per-unit ratios, sparsity).

    `mode` is the calibration mode: "sequential" (each block calibrated on the outputs of the
    already-pruned blocks before it, as the papers prune) or "dense-once" (as search trials do).
    `params` are further entries of the prune compressor's section, e.g. `allocation`,
    `offsets` or a metric's own parameters such as `meta_weight_transform`.
    """
    registry = build_registry()
    section = {"metric": metric, "sparsity": sparsity, "pattern": pattern, **params}
    compressor = registry.compressor("prune")
    compressor.check(section, registry)
    context = _context(model, calibration, compressor.stats_needed(section, registry, mode), mode, registry)
    compressor.prepare(context, section)
    return compressor.apply(context, section, Journal())  # the journal is dropped: nothing is undone


def perplexity(model: nn.Module, token_ids: Tensor, context: int | None = None) -> float:
    """Perplexity on 1-D token ids (cut into non-overlapping windows of the model's context) or 2-D windows."""
    if token_ids.dim() == 1:
        token_ids = evaluation_windows(token_ids, model_context(model, context), None)
    registry = build_registry()
    study_context = StudyContext(model, None, decoder_layout(model), token_ids[:0], token_ids, {}, registry)
    return registry.scorer("perplexity").score(study_context)["perplexity"]


def load_compressed(directory: str | Path, device: str = "cpu") -> tuple[nn.Module, Callable[[], Any]]:
    """A checkpoint `autoprune export` wrote, with its recipe's run-time settings applied (the
    searched KV-cache bits), and the factory of its KV cache: `generate(..., cache=new_cache())`
    (`past_key_values=` in transformers releases before the rename, `plugin.cache_keyword`) runs with them (a fresh cache per call; None, transformers' own, when nothing was searched)."""
    recipe = read_recipe(directory)
    model = load_checkpoint(directory, recipe.config["model"]["dtype"], device)
    return model, apply_runtime(model, recipe.runtime, build_registry())


def reproduce(recipe: str | Path) -> tuple[nn.Module, Callable[[], Any]]:
    """The model a recipe describes, rebuilt from the dense model as export built it (same builder,
    same compress step, same calibration mode), and its KV-cache factory. Records nothing. Like a
    trial's, its surviving blocks keep their dense numbering; export is what writes it as a checkpoint."""
    found = read_recipe(recipe)
    config = OmegaConf.merge(OmegaConf.structured(AutopruneConfig), found.config)
    config.study.storage = config.mlflow.tracking_uri = "sqlite:///:memory:"  # no store is opened
    plan = prepare(config)  # type: ignore[arg-type]
    baselines = [Baseline(found.baseline["name"], {}, found.baseline["overrides"])] if found.baseline else []
    context = build_context(plan, defaultdict(list), baselines)
    if windows_hash(context.calibration) != found.calibration["data_hash"]:
        raise ConfigError(
            f"the calibration windows differ from those of the recipe in {recipe} ({found.calibration['data_hash']}); "
            "the model or data files changed since it was exported"
        )
    apply_sample(plan, context, found.sample, baselines)
    return context.model, context.runtime.new_cache or default_cache
