"""Which weights to remove given their scores, for unstructured and N:M patterns.

Shared by the prune compressor and by the metrics that solve (SparseGPT, STADE), so every
metric prunes to exactly the same counts.
"""

import torch
from torch import Tensor

from autoprune.plugin import SparsityPattern


def lowest_scores_mask(score: Tensor, ratio: float, comparison: str) -> Tensor:
    """True where a weight is pruned: the floor(ratio · group size) lowest scores of each group.

    `comparison` is "row" (each output row is a group, as Wanda) or "matrix" (one group).
    """
    mask = torch.zeros_like(score, dtype=torch.bool)
    if comparison == "row":
        k = int(score.shape[1] * ratio)
        if k > 0:
            mask.scatter_(1, score.topk(k, dim=1, largest=False).indices, True)
    elif comparison == "matrix":
        k = int(score.numel() * ratio)
        if k > 0:
            mask.view(-1)[score.reshape(-1).topk(k, largest=False).indices] = True
    else:
        raise ValueError(f"unknown comparison group {comparison!r}; use 'row' or 'matrix'")
    return mask


def n_of_m_mask(score: Tensor, pattern: SparsityPattern) -> Tensor:
    """True where pruned: the m − n lowest scores of every m consecutive inputs of each row."""
    rows, columns = score.shape
    if columns % pattern.m:
        raise ValueError(f"{pattern} needs the input size ({columns}) to be a multiple of {pattern.m}")
    groups = score.reshape(rows, columns // pattern.m, pattern.m)
    lowest = groups.topk(pattern.m - pattern.n, dim=2, largest=False).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(2, lowest, True).reshape(rows, columns)


def row_positions(score: Tensor) -> Tensor:
    """Each weight's place in its row's ascending order of scores, in the narrowest integer type.

    Pruning the weights whose place is below floor(ratio · columns) removes the same number
    per row as `lowest_scores_mask(score, ratio, "row")`, and the same weights unless scores
    tie at the threshold (here ties go by column, as a stable sort orders them; `topk` there
    breaks them in no promised order). With dense-once statistics the places are the same in every trial, so they
    are computed once per study and a trial only compares them with its k.
    """
    order = score.argsort(dim=1, stable=True)
    dtype = torch.int16 if score.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    places = torch.arange(score.shape[1], dtype=dtype, device=score.device).expand_as(order)
    return torch.empty_like(order, dtype=dtype).scatter_(1, order, places)


def prune_mask(score: Tensor, ratio: float, pattern: SparsityPattern, comparison: str) -> Tensor:
    """The mask for one matrix: N:M groups when the pattern is N:M, else `ratio` per comparison group."""
    return n_of_m_mask(score, pattern) if pattern.is_n_of_m else lowest_scores_mask(score, ratio, comparison)
