"""A compressed model as a Hugging Face checkpoint that plain transformers loads, and loaded back.

The weights are saved as compressed (safetensors; pruned weights are zeros). Removed blocks are
really gone: the model's block list holds only the survivors, saved as blocks 0..k-1, and the
saved config says `num_hidden_layers = k`, every per-layer list of the config (a list with one
entry per dense block, such as `layer_types`) cut to the survivors. The model in memory keeps its
dense config, because its surviving blocks keep their dense `layer_idx`, which generate()'s
default cache is sized by.

What a compressor set beyond the weights (`context.runtime.settings`, e.g. the KV cache's bits)
is not in the checkpoint: `checkpoint_runtime` restates it in the checkpoint's block numbering for
the recipe, and `apply_runtime` applies each compressor named there with its settings as its
section. So a compressor that sets run-time state must accept its own settings as parameters and
change nothing but run-time state with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.context import StudyContext
from autoprune.errors import ModelLoadError
from autoprune.journal import Journal
from autoprune.model import DTYPES, decoder_layout
from autoprune.registry import Registry

_NOT_PER_LAYER = {"architectures"}  # config lists that may happen to have one entry per block


def _survivors(value: Any, kept: Sequence[int], dense_blocks: int) -> Any:
    """A per-block list cut to the surviving blocks; anything else as it is."""
    if isinstance(value, (list, tuple)) and len(value) == dense_blocks and len(kept) < dense_blocks:
        return [value[slot] for slot in kept]
    return value


def checkpoint_runtime(
    settings: Mapping[str, Mapping[str, Any]], kept: Sequence[int], dense_blocks: int
) -> dict[str, dict[str, Any]]:
    """Run-time settings (dense numbering: one list entry per dense block) in the checkpoint's numbering."""
    return {
        name: {key: _survivors(value, kept, dense_blocks) for key, value in section.items()}
        for name, section in settings.items()
    }


@contextmanager
def _config_of_survivors(config: Any, kept: Sequence[int], dense_blocks: int) -> Iterator[None]:
    """The config as the checkpoint must say it while it is saved; the model keeps its own after."""
    changes = {
        key: _survivors(value, kept, dense_blocks)
        for key, value in vars(config).items()
        if not key.startswith("_") and key not in _NOT_PER_LAYER
    }
    changes = {key: value for key, value in changes.items() if value is not getattr(config, key)}
    changes["num_hidden_layers"] = len(kept)
    before = {key: getattr(config, key) for key in changes}
    for key, value in changes.items():
        setattr(config, key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            setattr(config, key, value)


def save_checkpoint(model: nn.Module, tokenizer: Any, kept: Sequence[int], dense_blocks: int, directory: Path) -> None:
    """Write `model` (whose surviving blocks are the dense blocks `kept`) and its tokenizer to `directory`."""
    with _config_of_survivors(model.config, kept, dense_blocks):
        model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def load_checkpoint(directory: str | Path, dtype: str = "float32", device: str = "cpu") -> nn.Module:
    """The checkpoint in `directory`, refused unless every weight it declares is found and used."""
    from transformers import AutoModelForCausalLM

    try:
        model, loading = AutoModelForCausalLM.from_pretrained(directory, dtype=DTYPES[dtype], output_loading_info=True)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load the checkpoint in {str(directory)!r}: {error}") from error
    wrong = {kind: sorted(keys) for kind, keys in loading.items() if kind.endswith("_keys") and keys}
    if wrong:
        raise ModelLoadError(f"the checkpoint in {str(directory)!r} does not match its config: {wrong}")
    return model.to(device).eval().requires_grad_(False)


def default_cache() -> None:
    """No run-time cache: generate() builds transformers' own."""
    return None


def apply_runtime(model: nn.Module, runtime: Mapping[str, Mapping[str, Any]], registry: Registry) -> Callable[[], Any]:
    """Apply each run-time compressor of a recipe to the loaded `model`, for good; returns the factory
    of the KV cache `generate()` must be given (one fresh cache per call)."""
    nothing = torch.empty(0, 0, dtype=torch.long)
    context = StudyContext(model, None, decoder_layout(model), nothing, nothing, {}, registry, repeated=False)
    journal = Journal()  # never restored: the state lasts as long as the model
    for name, settings in runtime.items():
        compressor = registry.compressor(name)
        compressor.prepare(context, settings)
        compressor.apply(context, settings, journal)
    return context.runtime.new_cache or default_cache
