"""SparseGPT (Frantar & Alistarh, 2023): prune with an OBS update of the surviving weights.

For each linear, with X the calibration inputs (tokens × in):

    H    = 2 XᵀX / sequences + λI,  λ = 0.01 · mean(diag H)   (inputs that never fire: H_jj = 1, W_:j = 0)
    U    = upper Cholesky factor of H⁻¹
    columns are processed in blocks of 128; within a block, column by column:
        saliency  w_ij² / U_jj²                         (the OBS error of removing w_ij)
        mask      unstructured: the floor(s · size) lowest saliencies of the block, chosen
                  once per block; N:M: the m − n lowest of every m columns, chosen when the
                  group starts, from the weights as updated so far
        q         column j with its masked weights zeroed
        W_:,j:   -= ((w_j − q_j) / U_jj) ⊗ U_j,j:       (spread the error over later columns)
    after a block, its accumulated errors update all later columns at once (lazy batch update)

The reference picks the unstructured threshold with `<=`, one weight more per block than the
floor; here each block loses exactly floor(s · size) weights, as every other metric does.
The journal keeps each matrix's old values, since every surviving weight changes.
"""

import torch
from torch import Tensor, nn

from autoprune.plugin import Journal, LinearStats, PruningMetric, SparsityPattern, hookimpl

BLOCK_SIZE = 128
DAMPING = 0.01


def inverse_hessian_factor(stats: LinearStats, device: torch.device) -> tuple[Tensor, Tensor]:
    """U (upper Cholesky factor of the damped H⁻¹) and the mask of dead input channels."""
    hessian = stats.xtx.to(device, torch.float32) * (2 / stats.samples)
    dead = hessian.diagonal() == 0
    hessian[dead, dead] = 1
    hessian.diagonal().add_(DAMPING * hessian.diagonal().mean())
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
    return torch.linalg.cholesky(inverse, upper=True), dead


class SparseGPT(PruningMetric):
    name = "sparsegpt"
    comparison = "matrix"  # unstructured masks compare within blocks of 128 columns
    needs = frozenset({"xtx"})
    solves = True

    def score(self, weight: Tensor, stats: LinearStats) -> Tensor:
        """The OBS saliency w_ij² / U_jj² of the dense weights (the first block's selection rule)."""
        factor, _ = inverse_hessian_factor(stats, weight.device)
        return weight.float().square() / factor.diagonal().square().unsqueeze(0)

    def solve(
        self, linear: nn.Linear, stats: LinearStats, ratio: float, pattern: SparsityPattern, journal: Journal
    ) -> int:
        weight = linear.weight.detach().float().clone()
        factor, dead = inverse_hessian_factor(stats, weight.device)
        weight[:, dead] = 0
        columns = weight.shape[1]
        pruned = torch.zeros_like(weight, dtype=torch.bool)
        for start in range(0, columns, BLOCK_SIZE):
            end = min(start + BLOCK_SIZE, columns)
            block = weight[:, start:end].clone()
            block_factor = factor[start:end, start:end]
            diagonal = block_factor.diagonal()
            errors = torch.zeros_like(block)
            if pattern.is_n_of_m:
                mask = torch.zeros_like(block, dtype=torch.bool)
            else:
                saliency = block.square() / diagonal.square().unsqueeze(0)
                k = int(saliency.numel() * ratio)
                mask = torch.zeros_like(block, dtype=torch.bool)
                if k > 0:
                    mask.view(-1)[saliency.reshape(-1).topk(k, largest=False).indices] = True
            for j in range(end - start):
                if pattern.is_n_of_m and j % pattern.m == 0:
                    group = block[:, j : j + pattern.m].square() / diagonal[j : j + pattern.m].square().unsqueeze(0)
                    lowest = group.topk(pattern.m - pattern.n, dim=1, largest=False).indices
                    mask[:, j : j + pattern.m].scatter_(1, lowest, True)
                column = block[:, j]
                kept = column.masked_fill(mask[:, j], 0)
                error = (column - kept) / diagonal[j]
                block[:, j:] -= error.unsqueeze(1) * block_factor[j, j:].unsqueeze(0)
                block[:, j] = kept
                errors[:, j] = error
            weight[:, start:end] = block
            weight[:, end:] -= errors @ factor[start:end, end:]
            pruned[:, start:end] = mask
        pruned[:, dead] = True
        journal.overwrite(linear.weight, weight.to(linear.weight.dtype))
        return int(pruned.sum())


@hookimpl
def register_metrics() -> list[PruningMetric]:
    return [SparseGPT()]
