"""The `kv_cache` compressor: KIVI-style key/value bits per decoder layer, searched with the rest.

Its section takes `key_bits` and `value_bits` (or `bits` for both), each a constant, `{choices:
[...]}` or a per-layer family over the dense model's blocks, from {2, 3, 4, 6, 8, 16} (16: kept as
is); `group_size` G (tokens per key group, channels per value group) and `residual` R (the newest
tokens kept in full precision); and `quantize` (default true): false leaves the model and its cache
as transformers runs them, so that a search can weigh a quantized cache against none at all (the
bits then depend on it: `key_bits: {..., when: {quantize: [true]}}`). A trial's settings go to two places, both undone by the journal:
each attention module carries its layer's `LayerSpec` and the model runs `attention.py`'s function
(the accuracy path every scorer sees), and `context.runtime` gets the factory of the packed cache
for `generate()` and that cache's size for the memory objectives.

Per-layer bits are indexed by the dense model's numbering (`layer_idx`), so they keep their meaning
when `remove_layers` runs in the same trial: a removed block's bits go unused and count nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from torch import nn

from autoprune.plugin import (
    Compressor,
    ConfigError,
    DecoderLayout,
    Journal,
    Registry,
    StudyContext,
    attention_shape,
    possible_values,
)
from autoprune_plugins.compressors.kv_cache.attention import NAMES, SPEC, register
from autoprune_plugins.compressors.kv_cache.cache import LayerSpec, PackedCache, layer_bytes
from autoprune_plugins.compressors.kv_cache.quantizer import BITS, FULL

log = logging.getLogger("autoprune")

BIT_KEYS = ("bits", "key_bits", "value_bits")
DEFAULTS = {"group_size": 32, "residual": 128}  # KIVI's


def attention_modules(block: nn.Module) -> list[nn.Module]:
    """The modules of a decoder block that attend: they carry the `layer_idx` the cache is indexed by."""
    return [m for m in block.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]


def _per_layer(value: int | Sequence[int], blocks: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, Sequence) else [int(value)] * blocks


def layer_specs(params: Mapping[str, Any], blocks: int) -> list[LayerSpec]:
    """One `LayerSpec` per block of the dense model from a trial's sample of the section."""
    keys = _per_layer(params.get("key_bits", params.get("bits", FULL)), blocks)
    values = _per_layer(params.get("value_bits", params.get("bits", FULL)), blocks)
    group, residual = (int(params.get(name, default)) for name, default in DEFAULTS.items())
    return [LayerSpec(k, v, group, residual) for k, v in zip(keys, values)]


def _describe(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return str(entry)
    return f"{'per layer ' if entry.get('per_layer') else ''}from {list(entry['choices'])}"


class KVCache(Compressor):
    name = "kv_cache"
    params = ("quantize", "bits", "key_bits", "value_bits", "group_size", "residual")

    def check(self, space: Mapping[str, Any], registry: Registry) -> None:
        switch = space.get("quantize", True)
        if isinstance(switch, Mapping) and "choices" not in switch:
            raise ConfigError(f"space.kv_cache.quantize must be true, false or {{choices: [...]}}, got {switch!r}")
        if any(type(value) is not bool for value in possible_values(switch)):
            raise ConfigError(f"space.kv_cache.quantize takes true or false, got {switch!r}")
        given = [key for key in BIT_KEYS if key in space]
        if not given:
            raise ConfigError("space.kv_cache sets no bits; add +space.kv_cache.bits=4 (or key_bits and value_bits)")
        if "bits" in space and len(given) > 1:
            raise ConfigError(
                "space.kv_cache.bits sets key_bits and value_bits at once; drop bits or drop key_bits and value_bits"
            )
        for key in given:
            entry = space[key]
            if isinstance(entry, Mapping) and "choices" not in entry:
                raise ConfigError(f"space.kv_cache.{key} must be a constant or {{choices: [...]}}, got {entry!r}")
            wrong = [v for v in possible_values(entry) if type(v) is not int or v not in BITS]
            if wrong:
                raise ConfigError(
                    f"space.kv_cache.{key} offers {wrong[0]!r}; bits must be one of {list(BITS)} (16: not quantized)"
                )
        for key, lowest in (("group_size", 1), ("residual", 0)):
            entry = space.get(key, DEFAULTS[key])
            if isinstance(entry, Mapping) and entry.get("per_layer"):
                raise ConfigError(f"space.kv_cache.{key} is one value for all layers; drop per_layer")
            if not all(type(v) is int and v >= lowest for v in possible_values(entry)):
                raise ConfigError(f"space.kv_cache.{key} takes whole numbers >= {lowest}, got {entry!r}")

    def check_model(self, space: Mapping[str, Any], model_config: Mapping[str, Any]) -> None:
        try:
            _, head_dim = attention_shape(model_config)
        except (KeyError, TypeError, ZeroDivisionError):  # a config.json that does not say: judged in prepare
            return
        self._check_head_dim(space, head_dim)

    @staticmethod
    def _check_head_dim(space: Mapping[str, Any], head_dim: int) -> None:
        if head_dim % 8:
            raise ConfigError(
                f"the kv_cache compressor packs whole bytes per head; head_dim {head_dim} is not a multiple of 8"
            )
        for group in possible_values(space.get("group_size", DEFAULTS["group_size"])):
            if head_dim % group:
                raise ConfigError(
                    f"space.kv_cache.group_size {group} does not divide the model's head_dim {head_dim} "
                    f"(values are grouped along channels); pick a divisor such as {head_dim // 2}"
                )

    def prepare(self, context: StudyContext, space: Mapping[str, Any]) -> None:
        base = context.model.config._attn_implementation
        if base not in NAMES:
            raise ConfigError(
                f"the kv_cache compressor wraps sdpa or eager attention, and the model runs {base!r}; "
                "load it with attn_implementation='sdpa'"
            )
        for name, block in zip(context.layout.block_names, context.layout.blocks):
            if not attention_modules(block):
                raise ConfigError(f"the kv_cache compressor found no attention module with a layer_idx in {name}")
        self._check_head_dim(space, attention_shape(context.model.config)[1])
        window = context.evaluation.shape[1]
        smallest = min(possible_values(space.get("residual", DEFAULTS["residual"])))
        group = min(possible_values(space.get("group_size", DEFAULTS["group_size"])))
        if window and smallest + group > window:
            log.warning(
                f"kv_cache: with residual {smallest} and group_size {group}, no token of a {window}-token "
                "evaluation window is ever quantized; lower space.kv_cache.residual"
            )

    def summary(self, space: Mapping[str, Any], layout: DecoderLayout) -> str:
        group, residual = (space.get(name, default) for name, default in DEFAULTS.items())
        bits = ", ".join(f"{key} {_describe(space[key])}" for key in BIT_KEYS if key in space)
        switch = space.get("quantize", True)
        if switch is False:
            return "not quantized (quantize: false)"
        searched = "quantized or not; when quantized, " if isinstance(switch, Mapping) else ""
        return f"{searched}{bits}; groups of {group}, at least the newest {residual} tokens kept in full precision"

    def apply(self, context: StudyContext, params: Mapping[str, Any], journal: Journal) -> dict[str, Any]:
        model, layout = context.model, context.layout
        if not params.get("quantize", True):  # nothing installed: transformers' own attention and cache
            full = [FULL] * len(layout)
            return {"block": layout.block_names, "key_bits": full, "value_bits": full, "mean_bits": float(FULL)}
        modules = {m: m.layer_idx for block in layout.blocks for m in attention_modules(block)}
        blocks = max([*layout.slots, *modules.values()]) + 1
        specs = layer_specs(params, blocks)
        self._install(model, {module: specs[index] for module, index in modules.items()}, journal)
        heads, head_dim = attention_shape(model.config)
        element = next(model.parameters()).element_size()

        def cache_bytes(tokens: int, batch: int) -> int:  # the blocks present when a scorer asks
            return sum(layer_bytes(specs[s], tokens, batch, heads, head_dim, element) for s in context.layout.slots)

        present = [specs[slot] for slot in layout.slots]
        settings = {
            "key_bits": [spec.key_bits for spec in specs],
            "value_bits": [spec.value_bits for spec in specs],
            "group_size": specs[0].group_size,
            "residual": specs[0].residual,
        }
        context.runtime.set(
            journal,
            new_cache=partial(PackedCache, specs),
            cache_bytes=cache_bytes,
            settings={**context.runtime.settings, self.name: settings},
        )
        return {
            "block": layout.block_names,
            "key_bits": [spec.key_bits for spec in present],
            "value_bits": [spec.value_bits for spec in present],
            "mean_bits": sum(spec.key_bits + spec.value_bits for spec in present) / (2 * len(present)),
        }

    @staticmethod
    def _install(model: nn.Module, specs: Mapping[nn.Module, LayerSpec], journal: Journal) -> None:
        """Give every attention module its spec and run the model with the quantizing attention."""
        base = model.config._attn_implementation
        for module, spec in specs.items():
            setattr(module, SPEC, spec)
        model.set_attn_implementation(register(base))

        def undo() -> None:
            model.set_attn_implementation(base)
            for module in specs:
                delattr(module, SPEC)

        journal.on_undo(undo)
