"""The accuracy path: attention that sees keys and values exactly as the packed cache returns them.

For the query at cache index t, the cache holds its oldest Q_t = quantized_tokens(t + 1) tokens
quantized and the rest as they came. So attention runs over two copies of the keys side by side,
x̂ (quantized → dequantized) and x (full precision), with complementary masks: query t sees x̂_j
for j < Q_t and x_j for Q_t ≤ j ≤ t (and the model's own causal and padding mask over both).
Groups are fixed G-token spans from the start of the cache, so x̂_j never depends on tokens after
the query: no query sees statistics of later tokens. A whole window in one forward (perplexity)
therefore gives, at every position, the logits of decoding it token by token through the cache.

Keys and values arrive as the model stores them: before grouped-query heads are repeated, and
Llama keys after RoPE. A layer at 16 bits, or a call where no query sees a quantized token, runs
the model's own attention function unchanged, so a 16-bit cache is bit-identical to the stock
model. Quantized calls use torch's scaled-dot-product attention through transformers' wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from autoprune_plugins.compressors.kv_cache.cache import DEQUANTIZED, LayerSpec
from autoprune_plugins.compressors.kv_cache.quantizer import FULL, fake_quantize_keys, fake_quantize_values

SPEC = "autoprune_kv"  # attribute of an attention module: its `LayerSpec`
NAMES = {"sdpa": "autoprune_kivi", "eager": "autoprune_kivi_eager"}  # the model's own attention -> ours
MASKS = {"sdpa": sdpa_mask, "eager": eager_mask}


def _seen_quantized(x: Tensor, tokens: int, bits: int, group_size: int, quantize: Callable) -> Tensor:
    """x̂ of the first `tokens` tokens; those the cache returned already dequantized are kept as they are."""
    if bits == FULL:
        return x[:, :, :tokens]
    done = getattr(x, DEQUANTIZED, 0)
    return torch.cat([x[:, :, :done], quantize(x[:, :, done:tokens], bits, group_size)], dim=2)


def _allowed(mask: Tensor | None, queries: int, tokens: int, device: torch.device) -> Tensor:
    """The model's mask as booleans [batch or 1, 1, queries, tokens] (True: may attend); causal when None."""
    if mask is None:
        index = torch.arange(tokens, device=device)
        return (index <= index[tokens - queries :, None])[None, None]
    mask = mask[..., :tokens]
    return mask if mask.dtype == torch.bool else mask == 0  # eager masks add 0 or the dtype's minimum


def kivi_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    *,
    base: str,
    **kwargs,
) -> tuple[Tensor, Tensor | None]:
    own = ALL_ATTENTION_FUNCTIONS[base]
    spec: LayerSpec | None = getattr(module, SPEC, None)
    if spec is None or spec.is_full:
        return own(module, query, key, value, attention_mask, **kwargs)
    queries, tokens = query.shape[2], key.shape[2]
    cache_index = torch.arange(tokens - queries, tokens, device=query.device)
    group, residual = spec.group_size, spec.residual
    bounds = ((cache_index + 1 - residual).div(group, rounding_mode="floor") * group).clamp(min=0)  # Q_t per query
    top = int(bounds[-1])
    if top == 0:  # no query sees a quantized token yet
        return own(module, query, key, value, attention_mask, **kwargs)
    keys = torch.cat([_seen_quantized(key, top, spec.key_bits, group, fake_quantize_keys), key], dim=2)
    values = torch.cat([_seen_quantized(value, top, spec.value_bits, group, fake_quantize_values), value], dim=2)
    allowed = _allowed(attention_mask, queries, tokens, query.device)
    quantized = torch.arange(tokens, device=query.device) < bounds[:, None]  # [queries, tokens]
    mask = torch.cat([allowed[..., :top] & quantized[:, :top], allowed & ~quantized], dim=-1)
    return sdpa_attention_forward(module, query, keys, values, mask, **kwargs)


def register(base: str) -> str:
    """Register the attention (and its mask) that wraps the model's own `base` one; return its name."""
    name = NAMES[base]
    AttentionInterface.register(name, partial(kivi_attention, base=base))
    AttentionMaskInterface.register(name, MASKS[base])
    return name
