"""Memory at serving time in MB (10⁶ bytes), for `serving.batch_size` sequences of
`serving.context_length` tokens (a context built without a serving shape: one evaluation window).

- `kv_cache` → `kv_cache_mb`: the KV cache alone, as the model runs now: packed when a compressor
  quantized it (`context.runtime`), else transformers' plain cache in the model's dtype. It grows
  with tokens and sequences, so at long contexts or large batches it outweighs the weights, and
  only quantizing the cache (or removing blocks) shrinks it.
- `memory` → `memory_mb`: what serving needs in all, the stored weights (exactly as `size` counts
  them) plus that KV cache, for studies that trade both against quality with one objective.

`size_mb` keeps its meaning, the weights alone, so a study can still report them apart.
"""

from autoprune.plugin import Scorer, StudyContext, hookimpl
from autoprune_plugins.scorers.size import stored_bytes


def kv_cache_bytes(context: StudyContext) -> int:
    """The KV cache's bytes at the context's serving shape."""
    tokens, batch = context.serving_shape()
    return context.kv_cache_bytes(tokens, batch)


class KVCacheSize(Scorer):
    name = "kv_cache"
    objectives = {"kv_cache_mb": "minimize"}

    def score(self, context: StudyContext) -> dict[str, float]:
        return {"kv_cache_mb": kv_cache_bytes(context) / 1e6}


class ServingMemory(Scorer):
    name = "memory"
    objectives = {"memory_mb": "minimize"}

    def score(self, context: StudyContext) -> dict[str, float]:
        return {"memory_mb": (stored_bytes(context) + kv_cache_bytes(context)) / 1e6}


@hookimpl
def register_scorers() -> list[Scorer]:
    return [KVCacheSize(), ServingMemory()]
