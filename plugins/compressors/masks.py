"""Which weights to remove given their scores: the lowest fraction per comparison group."""

import torch
from torch import Tensor


def lowest_scores_mask(score: Tensor, ratio: float, comparison: str) -> Tensor:
    """True where a weight is pruned: floor(ratio · group size) lowest scores of each group.

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
