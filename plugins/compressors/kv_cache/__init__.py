"""KIVI-style KV-cache quantization with bits per layer: quantizer, accuracy-path attention,
packed cache, and the `kv_cache` compressor that puts them in the search space."""

from autoprune.plugin import Compressor, hookimpl
from autoprune_plugins.compressors.kv_cache.compressor import KVCache


@hookimpl
def register_compressors() -> list[Compressor]:
    return [KVCache()]
