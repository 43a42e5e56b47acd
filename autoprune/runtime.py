"""How the model runs beyond its weights: the state a compressor sets for every scorer.

Most compressors change weights, which the journal undoes. Some change how the model is *run*
instead: a quantized KV cache installs an attention function on the model and needs `generate()`
to use its own cache. That state lives in one place, `StudyContext.runtime`, set through
`Runtime.set(journal, ...)` so the trial undoes it like a weight change, and every scorer honours it
without knowing which compressor set it:

- a scorer that calls the model (perplexity) needs nothing: the attention function is installed
  on the model itself, through `journal.on_undo`, by the compressor;
- a scorer that generates passes `runtime.new_cache()` under `cache_keyword(model)` (None: the
  default cache);
- a scorer that sizes memory asks `StudyContext.kv_cache_bytes(tokens, batch)`, which uses
  `runtime.cache_bytes` when a compressor set one and sizes the model's plain cache otherwise;
- `runtime.settings` says, per compressor name, what the state is (per-layer bits, say), for records
  and export.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from autoprune.journal import Journal
    from autoprune.model import DecoderLayout

RUNTIME_FIELDS = ("new_cache", "cache_bytes", "settings")


@dataclass
class Runtime:
    """The model's run-time state beyond its weights; the dense model's is all defaults."""

    new_cache: Callable[[], Any] | None = None  # a fresh KV cache for one generate() call; None: transformers'
    cache_bytes: Callable[[int, int], int] | None = None  # (tokens, batch) -> bytes of that cache; None: plain
    settings: dict[str, Any] = field(default_factory=dict)  # compressor name -> what it set, JSON-able

    def set(self, journal: Journal, **changes: Any) -> None:
        """Change fields for the rest of the trial; the journal puts the old values back."""
        unknown = set(changes) - set(RUNTIME_FIELDS)
        if unknown:
            raise TypeError(f"Runtime has no field {sorted(unknown)}; it has {list(RUNTIME_FIELDS)}")
        old = {name: getattr(self, name) for name in changes}
        for name, value in changes.items():
            setattr(self, name, value)

        def undo() -> None:
            for name, value in old.items():
                setattr(self, name, value)

        journal.on_undo(undo)


def cache_keyword(model: nn.Module) -> str:
    """The keyword the model's forward and `generate()` take a KV cache under: `cache` in the
    transformers releases that renamed it (which warn on the old name), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returned, under either name (see `cache_keyword`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def attention_shape(config: Any) -> tuple[int, int]:
    """(key/value heads, head dimension) of a transformers config, or of its config.json as a mapping:
    what one cached token holds per layer."""

    def get(key: str) -> Any:  # attribute access also follows a config's attribute_map (n_head, ...)
        return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)

    heads = get("num_attention_heads")
    return get("num_key_value_heads") or heads, get("head_dim") or get("hidden_size") // heads


def plain_cache_bytes(model: nn.Module, layout: DecoderLayout, tokens: int, batch: int) -> int:
    """Bytes of transformers' own cache: keys and values of every present block in the model's dtype."""
    kv_heads, head_dim = attention_shape(model.config)
    element = next(model.parameters()).element_size()
    return 2 * len(layout) * batch * tokens * kv_heads * head_dim * element
