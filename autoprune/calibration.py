"""Calibration statistics of every prunable linear's inputs, collected in one pass per study."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autoprune.model import DecoderLayout
from autoprune.progress import progress


@dataclass
class LinearStats:
    """Sums over the calibration tokens of one linear's input X (tokens × in)."""

    sum: Tensor  # Σ_t x_tj, shape (in,), float64
    sum_sq: Tensor  # Σ_t x_tj², shape (in,), float64
    count: int  # number of tokens
    samples: int  # number of calibration sequences (windows)
    xtx: Tensor | None = None  # Σ_t x_tᵀ x_t, shape (in, in), float32; only when a metric needs it
    # Σ_t x_tj² (‖a_t‖² − a_ti²) / ‖a_t‖⁴ over the layer's outputs a_t, shape (out, in), float32:
    # the token weighting of the cosine loss (see the ACE metric); only when a metric needs it
    cosine: Tensor | None = None
    cosine_centred: Tensor | None = None  # the same on inputs and outputs centred within each window

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


def cosine_weighting(inputs: Tensor, outputs: Tensor) -> Tensor:
    """Σ_t x_tj² (‖a_t‖² − a_ti²) / ‖a_t‖⁴ for inputs x (tokens × in) and outputs a (tokens × out).

    Tokens whose output is zero carry no direction and count for nothing.
    """
    norm_sq = outputs.square().sum(-1, keepdim=True)
    safe = torch.where(norm_sq > 0, norm_sq, torch.ones_like(norm_sq))
    weights = torch.where(norm_sq > 0, (norm_sq - outputs.square()) / safe.square(), torch.zeros_like(outputs))
    return weights.T @ inputs.square()


def _centred(tensor: Tensor) -> Tensor:
    """Subtract each window's mean over its tokens from a (windows, tokens, features) tensor."""
    return tensor - tensor.mean(1, keepdim=True)


class _Accumulator:
    """Running sums on the model's device in float64 (so variances keep their precision); only
    the (in,)-sized results move to the CPU. XᵀX accumulates in float32, as SparseGPT does, and
    so do the (out, in) cosine weightings.

    A linear's input need not keep the shape of the batch: OPT flattens fc1's and fc2's input to
    (windows·tokens, hidden). So the driver, which knows the batch, sets `batch` to its (windows,
    tokens) before each forward pass, and every input and output is viewed as (windows, tokens,
    features): the sequence count and the per-window centring then do not depend on the rank of
    the input nor on how many windows a forward pass holds. Without it (a hook driven by hand),
    an input of rank > 2 has its windows in the leading dimensions and a 2-D input is one window.
    """

    def __init__(self, linear: nn.Linear, kinds: set[str]):
        features, device = linear.in_features, linear.weight.device
        self.sum = torch.zeros(features, dtype=torch.float64, device=device)
        self.sum_sq = torch.zeros(features, dtype=torch.float64, device=device)
        self.xtx = torch.zeros(features, features, device=device) if "xtx" in kinds else None
        shape = (linear.out_features, features)
        self.cosine = torch.zeros(shape, device=device) if "cosine" in kinds else None
        self.cosine_centred = torch.zeros(shape, device=device) if "cosine_centred" in kinds else None
        self.count = 0
        self.samples = 0
        self.batch: tuple[int, int] | None = None  # (windows, tokens) of the forward pass running now

    def _windows(self, tensor: Tensor) -> Tensor:
        """`tensor` viewed as (windows, tokens, features)."""
        if self.batch is not None:
            windows, tokens = self.batch
        elif tensor.dim() > 2:
            windows, tokens = tensor.shape[:-2].numel(), tensor.shape[-2]
        else:
            windows, tokens = 1, tensor.shape[0]
        return tensor.reshape(windows, tokens, tensor.shape[-1])

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        x = self._windows(inputs[0].detach())  # (windows, tokens, in)
        windows, tokens, _ = x.shape
        x32 = x.float()
        flat = x32.reshape(windows * tokens, -1)  # (windows·tokens, in)
        self.sum += x.sum((0, 1), dtype=torch.float64)
        self.sum_sq += flat.square().sum(0, dtype=torch.float64)
        if self.xtx is not None:
            self.xtx += flat.T @ flat
        if self.cosine is not None or self.cosine_centred is not None:
            a32 = self._windows(output.detach().float())  # (windows, tokens, out)
            if self.cosine is not None:
                self.cosine += cosine_weighting(flat, a32.flatten(0, 1))
            if self.cosine_centred is not None:
                self.cosine_centred += cosine_weighting(_centred(x32).flatten(0, 1), _centred(a32).flatten(0, 1))
        self.count += windows * tokens
        self.samples += windows

    def result(self) -> LinearStats:
        def cpu(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.cpu()

        return LinearStats(
            sum=self.sum.cpu(),
            sum_sq=self.sum_sq.cpu(),
            count=self.count,
            samples=self.samples,
            xtx=cpu(self.xtx),
            cosine=cpu(self.cosine),
            cosine_centred=cpu(self.cosine_centred),
        )


class Accumulators(dict[str, _Accumulator]):
    """The accumulators of several linears, by name."""

    def batch(self, windows: int, tokens: int) -> None:
        """Tell every accumulator the shape of the batch the next forward pass runs."""
        for accumulator in self.values():
            accumulator.batch = (windows, tokens)


@contextmanager
def accumulating(linears: dict[str, nn.Linear], kinds: Iterable[str]) -> Iterator[Accumulators]:
    """Sum the inputs (and, for the cosine kinds, outputs) of `linears` during whatever forward
    passes run inside the block; `.result()` of each accumulator gives its `LinearStats`. A
    driver calls `.batch(windows, tokens)` before each pass (see `_Accumulator`)."""
    kinds = set(kinds)
    accumulators = Accumulators({name: _Accumulator(linear, kinds) for name, linear in linears.items()})
    handles = [linear.register_forward_hook(accumulators[name]) for name, linear in linears.items()]
    try:
        yield accumulators
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def collect_stats(
    model: nn.Module, layout: DecoderLayout, windows: Tensor, kinds: Iterable[str], batch_size: int = 8
) -> dict[str, LinearStats]:
    """Run the dense model over the calibration windows once, summing each linear's inputs.

    Sums and sums of squares are always collected (they are cheap); XᵀX and the cosine
    weightings only when a metric in the search space asks for them, since they cost in² and
    out·in floats per linear.
    """
    device = next(model.parameters()).device
    with accumulating(layout.all_linears(), kinds) as accumulators:
        for batch in progress(windows.split(batch_size), "calibration statistics", unit="batch"):
            accumulators.batch(*batch.shape[:2])
            model(batch.to(device), use_cache=False)
    return {name: accumulator.result() for name, accumulator in accumulators.items()}


class _StopForward(Exception):
    """Raised by the capture hook once block 0's inputs are known: the rest of the model need not run."""


class BlockInputs:
    """The inputs of one decoder block for every calibration batch, advanced block by block.

    This is the sequential calibration of the SparseGPT and Wanda papers: block l's statistics
    come from the outputs of blocks < l as already pruned. Block 0's call (hidden states plus
    the masks and position arguments every block shares) is captured once; each block then
    runs on its predecessor's outputs, without the rest of the model.
    """

    def __init__(self, model: nn.Module, layout: DecoderLayout, windows: Tensor, batch_size: int = 8):
        self.layout = layout
        self.calls: list[tuple[Tensor, tuple, dict]] = []

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.calls.append((args[0], args[1:], kwargs))
            raise _StopForward

        device = next(model.parameters()).device
        handle = layout.blocks[0].register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with torch.no_grad():
                for batch in windows.split(batch_size):
                    try:
                        model(batch.to(device), use_cache=False)
                    except _StopForward:
                        pass
        finally:
            handle.remove()

    @torch.no_grad()
    def _run(self, index: int, accumulators: Accumulators | None = None) -> list[Tensor]:
        block = self.layout.blocks[index]
        outputs = []
        for hidden, args, kwargs in self.calls:  # hidden: (windows, tokens, hidden)
            if accumulators is not None:
                accumulators.batch(*hidden.shape[:2])
            output = block(hidden, *args, **kwargs)
            outputs.append(output[0] if isinstance(output, tuple) else output)
        return outputs

    def collect(self, index: int, kinds: Iterable[str]) -> dict[str, LinearStats]:
        """Statistics of block `index`'s linears on its current inputs."""
        with accumulating(self.layout.linears[index], kinds) as accumulators:
            self._run(index, accumulators)
        return {name: accumulator.result() for name, accumulator in accumulators.items()}

    def advance(self, index: int) -> None:
        """Replace the inputs by block `index`'s outputs, as it is now (pruned)."""
        outputs = self._run(index)
        self.calls = [(output, args, kwargs) for output, (_, args, kwargs) in zip(outputs, self.calls)]
