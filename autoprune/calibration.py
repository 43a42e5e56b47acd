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

    sum: Tensor  # Σ_t x_tj, shape (in,), float64
    sum_sq: Tensor  # Σ_t x_tj², shape (in,), float64
    count: int  # number of tokens
    samples: int  # number of calibration sequences (windows)
    xtx: Tensor | None = None  # Σ_t x_tᵀ x_t, shape (in, in), float32; only when a metric needs it

    @property
    def norm(self) -> Tensor:
        """‖X_j‖: the L2 norm of input channel j over the calibration tokens (Wanda), float32."""
        return self.sum_sq.sqrt().float()

    @property
    def scaler_row(self) -> Tensor:
        """Σ_t x_tj² / sequences: the activation statistic of the Wanda, RIA and OptiShear references."""
        return (self.sum_sq / self.samples).float()

    @property
    def mean(self) -> Tensor:
        return (self.sum / self.count).float()

    @property
    def variance(self) -> Tensor:
        """Per-channel population variance, computed in float64 before rounding to float32."""
        mean = self.sum / self.count
        return (self.sum_sq / self.count - mean.square()).clamp_min(0).float()


class _Accumulator:
    """Running sums on the model's device in float64 (so variances keep their precision); only
    the (in,)-sized results move to the CPU. XᵀX accumulates in float32, as SparseGPT does."""

    def __init__(self, features: int, device: torch.device, with_xtx: bool):
        self.sum = torch.zeros(features, dtype=torch.float64, device=device)
        self.sum_sq = torch.zeros(features, dtype=torch.float64, device=device)
        self.xtx = torch.zeros(features, features, dtype=torch.float32, device=device) if with_xtx else None
        self.count = 0
        self.samples = 0

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
        self.sum += x.sum(0, dtype=torch.float64)
        self.sum_sq += x.float().square().sum(0, dtype=torch.float64)
        if self.xtx is not None:
            x32 = x.float()
            self.xtx += x32.T @ x32
        self.count += x.shape[0]
        self.samples += inputs[0].shape[0] if inputs[0].dim() > 2 else 1

    def result(self) -> LinearStats:
        xtx = None if self.xtx is None else self.xtx.cpu()
        return LinearStats(
            sum=self.sum.cpu(), sum_sq=self.sum_sq.cpu(), count=self.count, samples=self.samples, xtx=xtx
        )


@torch.no_grad()
def collect_stats(
    model: nn.Module, layout: DecoderLayout, windows: Tensor, kinds: Iterable[str], batch_size: int = 8
) -> dict[str, LinearStats]:
    """Run the dense model over the calibration windows once, summing each linear's inputs.

    Sums and sums of squares are always collected (they are cheap); XᵀX only when a metric in
    the search space asks for it, since it costs in² floats per linear.
    """
    with_xtx = "xtx" in set(kinds)
    device = next(model.parameters()).device
    accumulators = {
        name: _Accumulator(linear.in_features, device, with_xtx) for name, linear in layout.all_linears().items()
    }
    handles = [linear.register_forward_pre_hook(accumulators[name]) for name, linear in layout.all_linears().items()]
    try:
        for batch in windows.split(batch_size):
            model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: accumulator.result() for name, accumulator in accumulators.items()}
