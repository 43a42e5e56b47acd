"""A plain Python API for one pruning, no search: the same components a trial uses.

from autoprune import api
model, tokenizer = api.load("autoprune/assets/tiny-opt")          # or a hub id
calibration = api.windows(tokenizer, text, context=128, count=128)  # token windows
api.prune(model, calibration, metric="wanda", sparsity=0.5)        # or pattern="2:4"
api.perplexity(model, token_ids)                                   # 1-D ids or 2-D windows
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autoprune.calibration import collect_stats
from autoprune.context import StudyContext
from autoprune.data import calibration_windows, evaluation_windows, tokenize
from autoprune.journal import Journal
from autoprune.model import decoder_layout, load_model, model_context
from autoprune.registry import Registry, build_registry


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
