"""Compressed size in MB (10⁶ bytes): what storing the model as a sparse checkpoint takes.

Each pruned matrix (a decoder linear's weight) is stored as its nonzero values plus a
one-bit-per-weight mask, or densely when that is smaller (at sparsity under 1/32 for float32,
e.g. a dense matrix with a few weights that happen to be zero); every other tensor densely.
Values keep the model's dtype; shared (tied) tensors count once.
"""

import math

import torch

from autoprune.plugin import Scorer, StudyContext, hookimpl


def tensor_bytes(tensor: torch.Tensor, prunable: bool) -> int:
    dense = tensor.numel() * tensor.element_size()
    if not prunable:
        return dense
    sparse = int(torch.count_nonzero(tensor)) * tensor.element_size() + math.ceil(tensor.numel() / 8)
    return min(dense, sparse)


def compressed_bytes(model: torch.nn.Module, prunable: set[int]) -> int:
    """`prunable` holds the ids of the tensors a compressor may sparsify."""
    return sum(tensor_bytes(p, id(p) in prunable) for p in model.parameters())  # parameters() skips tied copies


def stored_bytes(context: StudyContext) -> int:
    """The model's weights as a sparse checkpoint stores them, the decoder linears' weights sparsified."""
    prunable = {id(linear.weight) for linear in context.layout.all_linears().values()}
    return compressed_bytes(context.model, prunable)


class CompressedSize(Scorer):
    name = "size"
    objectives = {"size_mb": "minimize"}

    def score(self, context: StudyContext) -> dict[str, float]:
        return {"size_mb": stored_bytes(context) / 1e6}


@hookimpl
def register_scorers() -> list[Scorer]:
    return [CompressedSize()]
