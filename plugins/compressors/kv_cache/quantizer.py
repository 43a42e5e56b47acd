"""KIVI's asymmetric integer quantization, in plain torch, and exact-width bit packing.

A group of values x is stored as b-bit codes q with one 16-bit scale s and zero-point z:

    z = min(x),  s = (max(x) − z) / (2^b − 1),  q = round((x − z) / s),  x̂ = q·s + z

Keys are quantized per channel (a group is G consecutive tokens of one channel), values per
token (a group is G consecutive channels of one token): keys have outlier channels, values do
not. Scale and zero-point are rounded to 16 bit *before* the codes are computed, so x̂ is
exactly what a cache that stores them in 16 bit hands back. 16 bits means "not quantized".

Every function here is deterministic and elementwise within a group, so quantizing a group on
its own (as the cache does when it flushes G tokens) and quantizing it among many (as the
accuracy path does for a whole window) give bit-identical x̂.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BITS = (2, 3, 4, 6, 8, 16)
FULL = 16  # bits that mean "kept as is"
MIN_SCALE = 2.0**-14  # smallest normal float16: a flat group's scale stays representable
FLOAT16_MAX = 65504.0


def quantized_tokens(tokens: int, group_size: int, residual: int) -> int:
    """How many of the oldest tokens are held quantized once `tokens` are cached.

    Whole groups of G tokens are quantized as soon as they are older than the newest R, so between
    R and R + G − 1 of the newest tokens stay in full precision.
    """
    return max(0, (tokens - residual) // group_size * group_size)


def scale_dtype(dtype: torch.dtype) -> torch.dtype:
    """16-bit storage for scales and zero-points: the model's own dtype when it is 16-bit."""
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.float16


def quantize(x: Tensor, bits: int, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Codes (uint8, shaped like x), scale and zero-point (16-bit, size 1 along `dim`) of the groups
    that run along `dim`."""
    levels = 2**bits - 1
    store = scale_dtype(x.dtype)
    x = x.float()
    zero = x.amin(dim, keepdim=True).clamp(-FLOAT16_MAX, FLOAT16_MAX).to(store)
    span = x.amax(dim, keepdim=True) - zero.float()
    scale = (span / levels).clamp(MIN_SCALE, FLOAT16_MAX).to(store)
    codes = ((x - zero.float()) / scale.float()).round_().clamp_(0, levels).to(torch.uint8)
    return codes, scale, zero


def dequantize(codes: Tensor, scale: Tensor, zero: Tensor, dtype: torch.dtype) -> Tensor:
    """x̂ = q·s + z, in `dtype`."""
    return (codes.float() * scale.float() + zero.float()).to(dtype)


def fake_quantize_keys(keys: Tensor, bits: int, group_size: int) -> Tensor:
    """Keys [batch, heads, tokens, head_dim] as the cache returns them; tokens a multiple of G."""
    if bits == FULL:
        return keys
    b, h, t, d = keys.shape
    groups = keys.reshape(b, h, t // group_size, group_size, d)  # a group: G tokens of one channel
    return dequantize(*quantize(groups, bits, dim=3), keys.dtype).reshape(b, h, t, d)


def fake_quantize_values(values: Tensor, bits: int, group_size: int) -> Tensor:
    """Values [batch, heads, tokens, head_dim] as the cache returns them; head_dim a multiple of G."""
    if bits == FULL:
        return values
    b, h, t, d = values.shape
    groups = values.reshape(b, h, t, d // group_size, group_size)  # a group: G channels of one token
    return dequantize(*quantize(groups, bits, dim=4), values.dtype).reshape(b, h, t, d)


def _chunk(bits: int) -> tuple[int, int]:
    """(codes, bytes) of the smallest run of codes that fills whole bytes: 8 codes of 3 bits are 3 bytes."""
    codes = 8 // math.gcd(bits, 8)
    return codes, codes * bits // 8


def packed_bytes(count: int, bits: int) -> int:
    """Bytes that `count` codes of `bits` bits take once packed: exactly count·bits/8, rounded up."""
    codes, nbytes = _chunk(bits)
    return math.ceil(count / codes) * nbytes


def pack(codes: Tensor, bits: int) -> Tensor:
    """Codes (uint8, any shape) as a flat uint8 tensor of `packed_bytes(codes.numel(), bits)` bytes."""
    per_chunk, nbytes = _chunk(bits)
    flat = codes.reshape(-1).to(torch.int32)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % per_chunk)]).view(-1, per_chunk)
    code_shifts = torch.arange(per_chunk - 1, -1, -1, device=codes.device, dtype=torch.int32) * bits
    words = (flat << code_shifts).sum(1, dtype=torch.int32)  # at most 24 bits per chunk
    byte_shifts = torch.arange(nbytes - 1, -1, -1, device=codes.device, dtype=torch.int32) * 8
    return ((words.unsqueeze(1) >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)


def unpack(packed: Tensor, bits: int, count: int) -> Tensor:
    """The first `count` codes (flat uint8) of a `pack`ed tensor."""
    per_chunk, nbytes = _chunk(bits)
    byte_shifts = torch.arange(nbytes - 1, -1, -1, device=packed.device, dtype=torch.int32) * 8
    words = (packed.view(-1, nbytes).to(torch.int32) << byte_shifts).sum(1, dtype=torch.int32)
    code_shifts = torch.arange(per_chunk - 1, -1, -1, device=packed.device, dtype=torch.int32) * bits
    codes = (words.unsqueeze(1) >> code_shifts) & (2**bits - 1)
    return codes.reshape(-1)[:count].to(torch.uint8)
