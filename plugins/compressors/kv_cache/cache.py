"""The packed cache `generate()` runs with: each layer's keys and values at their own bit widths.

A `PackedLayer` holds two `Stream`s (keys, values). A stream keeps its oldest tokens packed at b
bits per element with a 16-bit scale and zero-point per group, and the newest ones (at least R) as
they came; every G tokens that fall out of the residual window are quantized once and never again
(see `quantized_tokens`). A 16-bit stream stores everything as it came, like transformers' own
`DynamicLayer`.

`update` hands attention the dequantized old tokens followed by the full-precision rest *as they
were before this update's flush*, and marks the returned tensor with how many leading tokens are
already dequantized (`DEQUANTIZED`). The attention function (`attention.py`) quantizes, per query,
whatever else that query must see quantized; so a prompt processed in one forward sees exactly
what it would see token by token, and the cache's logits equal the accuracy path's.

`stream_bytes` sizes a stream from the same layout the stream stores, so the `kv_cache_mb`
objective is the real cache's size (a test compares it with the cache's tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.cache_utils import Cache, DynamicLayer

from autoprune_plugins.compressors.kv_cache.quantizer import (
    FULL,
    dequantize,
    pack,
    packed_bytes,
    quantize,
    quantized_tokens,
    unpack,
)

DEQUANTIZED = "autoprune_dequantized"  # attribute of a returned tensor: its leading tokens already dequantized
SCALE_BYTES = 2  # scale and zero-point are 16-bit


@dataclass(frozen=True)
class LayerSpec:
    """How one attention layer's cache is quantized."""

    key_bits: int
    value_bits: int
    group_size: int
    residual: int

    @property
    def is_full(self) -> bool:
        return self.key_bits == FULL and self.value_bits == FULL


def stream_bytes(bits: int, spec: LayerSpec, tokens: int, batch: int, heads: int, head_dim: int, element: int) -> int:
    """Bytes of one stream (keys or values: both hold one scale and zero-point per G elements) holding `tokens` for `batch` sequences; `element`
    is the byte size of a full-precision value."""
    per_token = batch * heads * head_dim
    if bits == FULL:
        return tokens * per_token * element
    quantized = quantized_tokens(tokens, spec.group_size, spec.residual)
    chunks = quantized // spec.group_size  # flushed G tokens at a time, each chunk packed on its own
    codes = chunks * packed_bytes(spec.group_size * per_token, bits)
    groups = chunks * per_token  # keys: G tokens of a channel; values: G channels of a token
    return codes + 2 * SCALE_BYTES * groups + (tokens - quantized) * per_token * element


def layer_bytes(spec: LayerSpec, tokens: int, batch: int, heads: int, head_dim: int, element: int) -> int:
    shape = (spec, tokens, batch, heads, head_dim, element)
    return stream_bytes(spec.key_bits, *shape) + stream_bytes(spec.value_bits, *shape)


class Stream:
    """Keys or values of one layer: packed groups of the oldest tokens, then full-precision tokens."""

    def __init__(self, bits: int, per_channel: bool, spec: LayerSpec) -> None:
        self.bits, self.per_channel, self.spec = bits, per_channel, spec
        self.raw: Tensor | None = None  # [batch, heads, tokens, head_dim], the newest tokens as they came
        self.codes: list[Tensor] = []  # one packed group of G tokens each, token-major
        self.scales: list[Tensor] = []
        self.zeros: list[Tensor] = []
        self.quantized = 0  # tokens held in `codes`

    @property
    def tokens(self) -> int:
        return self.quantized + (0 if self.raw is None else self.raw.shape[2])

    def append(self, new: Tensor) -> Tensor:
        """Add tokens; return every token for attention, the first `quantized` of them dequantized."""
        self.raw = new if self.raw is None else torch.cat([self.raw, new], dim=2)
        returned = self.raw if not self.codes else torch.cat([self.dequantized(new.dtype), self.raw], dim=2)
        setattr(returned, DEQUANTIZED, self.quantized)
        if self.bits != FULL:
            self._flush()
        return returned

    def _flush(self) -> None:
        """Quantize every whole group of G tokens that has left the residual window."""
        group = self.spec.group_size
        while quantized_tokens(self.tokens, group, self.spec.residual) > self.quantized:
            chunk, self.raw = self.raw[:, :, :group], self.raw[:, :, group:]
            b, h, g, d = chunk.shape
            if self.per_channel:  # one group per channel: G tokens
                codes, scale, zero = quantize(chunk, self.bits, dim=2)
            else:  # one group per G channels of a token
                codes, scale, zero = quantize(chunk.reshape(b, h, g, d // group, group), self.bits, dim=4)
            self.codes.append(pack(codes.reshape(b, h, g, d).permute(2, 0, 1, 3), self.bits))
            self.scales.append(scale)
            self.zeros.append(zero)
            self.quantized += group

    def dequantized(self, dtype: torch.dtype) -> Tensor:
        """The quantized tokens, x̂ = q·s + z, as [batch, heads, tokens, head_dim]."""
        b, h, _, d = self.raw.shape
        group = self.spec.group_size
        chunks = len(self.codes)
        codes = unpack(torch.cat(self.codes), self.bits, chunks * group * b * h * d)
        codes = codes.view(chunks, group, b, h, d).permute(2, 3, 0, 1, 4)  # [b, h, chunk, token, d]
        scale, zero = torch.stack(self.scales, 2), torch.stack(self.zeros, 2)
        if self.per_channel:  # scale [b, h, chunk, 1, d]
            return dequantize(codes, scale, zero, dtype).reshape(b, h, chunks * group, d)
        codes = codes.reshape(b, h, chunks, group, d // group, group)
        return dequantize(codes, scale, zero, dtype).reshape(b, h, chunks * group, d)

    @property
    def nbytes(self) -> int:
        tensors = [*self.codes, *self.scales, *self.zeros] + ([] if self.raw is None else [self.raw])
        return sum(t.numel() * t.element_size() for t in tensors)


class PackedLayer(DynamicLayer):
    """One decoder layer's cache: a key stream quantized per channel and a value stream per token."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.key_stream = Stream(spec.key_bits, True, spec)
        self.value_stream = Stream(spec.value_bits, False, spec)

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self.key_stream.append(key_states), self.value_stream.append(value_states)

    def get_seq_length(self) -> int:
        return self.key_stream.tokens

    @property
    def nbytes(self) -> int:
        return self.key_stream.nbytes + self.value_stream.nbytes

    def reset(self) -> None:
        self.__init__(self.spec)

    def _unsupported(self, *args, **kwargs) -> None:
        raise NotImplementedError(
            "the packed KV cache supports greedy and sampled decoding of a fixed batch; "
            "beam search, cropping and batch reshaping need transformers' default cache"
        )

    crop = reorder_cache = batch_repeat_interleave = batch_select_indices = _unsupported


class PackedCache(Cache):
    """One `PackedLayer` per decoder layer of the dense model, indexed by `layer_idx`.

    Blocks removed from the model leave their layers empty: lengths and mask sizes are read from
    the first layer in use, so `generate()` works on a model whose block 0 is gone.
    """

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__(layers=[PackedLayer(spec) for spec in specs])

    def _in_use(self, layer_idx: int) -> int:
        if self.layers[layer_idx].is_initialized:
            return layer_idx
        return next((i for i, layer in enumerate(self.layers) if layer.is_initialized), layer_idx)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[self._in_use(layer_idx)].get_seq_length()

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return self.layers[self._in_use(layer_idx)].get_mask_sizes(query_length)

    @property
    def nbytes(self) -> int:
        """Bytes the cache holds now: packed codes, scales, zero-points and full-precision tokens."""
        return sum(layer.nbytes for layer in self.layers)
