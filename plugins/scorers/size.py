"""Compressed size in MB (10⁶ bytes): what storing the model as a sparse checkpoint takes.

Each pruned matrix (a decoder linear's weight, out × in, e bytes per value) is counted in the
smallest of the formats that store it exactly:

- dense: out·in·e bytes;
- bitmask: its nonzero values plus one bit per weight, nnz·e + ⌈out·in/8⌉ bytes;
- N:M-packed, when every group of M consecutive inputs of each row holds at most N nonzeros:
  N values per group (zeros pad a group with fewer) plus a log₂M-bit index per value saying
  where in the group it sits, as NVIDIA's sparse tensor cores store 2:4 (2-bit indices),
  ⌈out·(in/M)·N·(8e + log₂M) / 8⌉ bytes. M is one of `GROUP_SIZES` (whole-bit indices;
  every pattern a study can search with such an M, e.g. 1:2, 1:4, 2:4, 2:8, 4:8; one with
  another M, such as 3:6, is stored as a bitmask) and N the fewest the matrix allows.

On equal bytes dense is preferred, then N:M (hardware can multiply it as it is), then the
bitmask: a 2:4 matrix with exactly half its weights left costs the same either way
(N/M·log₂M = 1 bit per weight), while 1:4 and 2:8 are smaller packed and 4:8 is smaller as a
bitmask. Every other tensor is stored densely; shared (tied) tensors count once, and removed
blocks, gone from the model, count nothing.
"""

import math
from collections import Counter
from dataclasses import dataclass

import torch

from autoprune.plugin import Scorer, SparsityPattern, StudyContext, hookimpl

GROUP_SIZES = (2, 4, 8, 16)
DENSE, BITMASK = "dense", "bitmask"
PREFERENCE = {DENSE: 0, BITMASK: 2}  # on equal bytes; an N:M format ranks 1


def n_of_m_patterns(nonzero: torch.Tensor) -> list[SparsityPattern]:
    """For each M of `GROUP_SIZES` that divides the row, the tightest N:M pattern a matrix
    satisfies (N the most nonzeros in any group of M consecutive inputs), when N < M.
    `nonzero` is the matrix's mask of nonzero weights (out × in)."""
    rows = nonzero.shape[0]
    counts = nonzero.view(torch.uint8)  # nonzeros per group of 1 input
    patterns = []
    for m in GROUP_SIZES:
        if counts.shape[1] % 2:
            break
        pairs = counts.reshape(rows, -1, 2)
        counts = pairs[..., 0] + pairs[..., 1]  # nonzeros per group of m consecutive inputs
        n = max(int(counts.max()), 1)
        if n < m:
            patterns.append(SparsityPattern(n, m))
    return patterns


def n_of_m_bytes(shape: torch.Size, element_size: int, pattern: SparsityPattern) -> int:
    """N values and a log₂M-bit index per value, for every group of M inputs of each row."""
    rows, columns = shape
    values = rows * (columns // pattern.m) * pattern.n
    return math.ceil(values * (8 * element_size + math.ceil(math.log2(pattern.m))) / 8)


def format_sizes(weight: torch.Tensor, prunable: bool) -> dict[str, int]:
    """The tensor's bytes in every format that stores it exactly: "dense" always; "bitmask" and
    the N:M patterns it satisfies (named as "2:4") for a prunable matrix."""
    element = weight.element_size()
    sizes = {DENSE: weight.numel() * element}
    if not prunable:
        return sizes
    nonzero = weight != 0
    values = int(torch.count_nonzero(nonzero))
    sizes[BITMASK] = values * element + math.ceil(weight.numel() / 8)
    if values < weight.numel():  # a matrix without zeros satisfies no N:M pattern
        for pattern in n_of_m_patterns(nonzero):
            sizes[str(pattern)] = n_of_m_bytes(weight.shape, element, pattern)
    return sizes


def smallest_format(sizes: dict[str, int]) -> str:
    return min(sizes, key=lambda name: (sizes[name], PREFERENCE.get(name, 1)))


@dataclass(frozen=True)
class StoredTensor:
    """One tensor of the checkpoint: its bytes in each format that can hold it, and whether a
    compressor may have sparsified it."""

    name: str
    sizes: dict[str, int]
    prunable: bool

    @property
    def format(self) -> str:
        return smallest_format(self.sizes)

    @property
    def bytes(self) -> int:
        return self.sizes[self.format]


@dataclass(frozen=True)
class CheckpointSize:
    """A model's weights as a checkpoint would store them, tensor by tensor."""

    tensors: list[StoredTensor]

    @property
    def bytes(self) -> int:
        """Every tensor in its smallest format: what `size_mb` reports."""
        return sum(tensor.bytes for tensor in self.tensors)

    def bytes_as(self, format_name: str) -> int:
        """Every pruned matrix in `format_name` where it can be, the rest densely: "dense" is the
        plain checkpoint transformers writes, "bitmask" a sparse one without N:M packing."""
        return sum(tensor.sizes.get(format_name, tensor.sizes[DENSE]) for tensor in self.tensors)

    def formats(self) -> Counter[str]:
        """How many pruned matrices take each format."""
        return Counter(tensor.format for tensor in self.tensors if tensor.prunable)


def checkpoint_size(model: torch.nn.Module, prunable: set[int]) -> CheckpointSize:
    """`prunable` holds the ids of the tensors a compressor may sparsify."""
    return CheckpointSize(
        [
            StoredTensor(name, format_sizes(parameter, id(parameter) in prunable), id(parameter) in prunable)
            for name, parameter in model.named_parameters()  # skips tied copies
        ]
    )


def context_checkpoint_size(context: StudyContext) -> CheckpointSize:
    """The context's model, the decoder linears' weights sparsified."""
    prunable = {id(linear.weight) for linear in context.layout.all_linears().values()}
    return checkpoint_size(context.model, prunable)


def stored_bytes(context: StudyContext) -> int:
    """The model's weights as a sparse checkpoint stores them, each matrix in its smallest format."""
    return context_checkpoint_size(context).bytes


def metric_name(format_name: str) -> str:
    """`2:4` as `2of4`: MLflow refuses colons in metric names on some systems."""
    return format_name.replace(":", "of")


class CompressedSize(Scorer):
    """`size_mb`, with the checkpoint in the plain formats (`dense_mb`, `bitmask_mb`) and how many
    pruned matrices take each format (`matrices.dense`, `matrices.bitmask`, `matrices.2of4`, ...)."""

    name = "size"
    objectives = {"size_mb": "minimize"}

    def score(self, context: StudyContext) -> dict[str, float]:
        checkpoint = context_checkpoint_size(context)
        counts = {DENSE: 0, BITMASK: 0, **checkpoint.formats()}
        return {
            "size_mb": checkpoint.bytes / 1e6,
            "dense_mb": checkpoint.bytes_as(DENSE) / 1e6,
            "bitmask_mb": checkpoint.bytes_as(BITMASK) / 1e6,
            **{f"matrices.{metric_name(name)}": count for name, count in counts.items()},
        }


@hookimpl
def register_scorers() -> list[Scorer]:
    return [CompressedSize()]
