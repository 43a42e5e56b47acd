"""Calibration statistics of every prunable linear's inputs, collected in one pass per study."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autoprune.model import DecoderLayout


@dataclass
class LinearStats:
    """Sums over the calibration tokens of one linear's input X (tokens × in)."""

    sum: Tensor  # Σ_t x_tj, shape (in,)
    sum_sq: Tensor  # Σ_t x_tj², shape (in,)
    count: int  # number of tokens
    xtx: Tensor | None = None  # Σ_t x_tᵀ x_t, shape (in, in); only when a metric needs it

    @property
    def norm(self) -> Tensor:
        """‖X_j‖: the L2 norm of input channel j over the calibration tokens (Wanda)."""
        return self.sum_sq.sqrt()

    @property
    def mean(self) -> Tensor:
        return self.sum / self.count

    @property
    def variance(self) -> Tensor:
        return (self.sum_sq / self.count - self.mean.square()).clamp_min(0)


class _Accumulator:
    def __init__(self, features: int, with_xtx: bool):
        self.sum = torch.zeros(features, dtype=torch.float64)
        self.sum_sq = torch.zeros(features, dtype=torch.float64)
        self.xtx = torch.zeros(features, features, dtype=torch.float64) if with_xtx else None
        self.count = 0

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64).cpu()
        self.sum += x.sum(0)
        self.sum_sq += x.square().sum(0)
        if self.xtx is not None:
            self.xtx += x.T @ x
        self.count += x.shape[0]

    def result(self) -> LinearStats:
        as32 = lambda t: None if t is None else t.to(torch.float32)  # noqa: E731
        return LinearStats(sum=as32(self.sum), sum_sq=as32(self.sum_sq), count=self.count, xtx=as32(self.xtx))


@torch.no_grad()
def collect_stats(
    model: nn.Module, layout: DecoderLayout, windows: Tensor, kinds: Iterable[str], batch_size: int = 8
) -> dict[str, LinearStats]:
    """Run the dense model over the calibration windows once, summing each linear's inputs.

    Sums and sums of squares are always collected (they are cheap); XᵀX only when a metric in
    the search space asks for it, since it costs in² floats per linear.
    """
    with_xtx = "xtx" in set(kinds)
    accumulators = {name: _Accumulator(linear.in_features, with_xtx) for name, linear in layout.all_linears().items()}
    handles = [linear.register_forward_pre_hook(accumulators[name]) for name, linear in layout.all_linears().items()]
    device = next(model.parameters()).device
    try:
        for batch in windows.split(batch_size):
            model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: accumulator.result() for name, accumulator in accumulators.items()}
