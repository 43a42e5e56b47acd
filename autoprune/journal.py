"""An undo log for one trial: compressors record what they change, the trial restores it.

Restoring from memory is what keeps trials cheap: no reload from disk and no second copy of
the model. Zeroing a weight stores only the values it removes plus a one-bit-per-weight mask,
so at sparsity s the log holds s + 1/32 of a float32 matrix's bytes. Only methods that rewrite
every surviving weight (SparseGPT) need `overwrite`, which keeps the matrix's old values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    flat = mask.reshape(-1)
    padded = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)])
    return (padded.view(-1, 8).to(torch.uint8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, numel: int) -> Tensor:
    bits = (packed.unsqueeze(1) & _BIT_WEIGHTS).ne(0)
    return bits.reshape(-1)[:numel]


class Journal:
    """Records changes to a model in order and undoes them in reverse."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._changed: set[int] = set()  # ids of the tensors changed since the last restore
        self.nbytes = 0

    def changed(self, tensor: Tensor) -> bool:
        """Whether `tensor` was changed through this journal since the last restore."""
        return id(tensor) in self._changed

    @torch.no_grad()
    def zero(self, weight: Tensor, mask: Tensor) -> None:
        """Set `weight[mask]` to zero in place, remembering the removed values."""
        packed = pack_bits(mask.cpu())
        removed = weight.masked_select(mask)
        self.nbytes += packed.numel() + removed.numel() * removed.element_size()

        @torch.no_grad()
        def undo() -> None:
            restored_mask = unpack_bits(packed, weight.numel()).to(weight.device).view_as(weight)
            weight.masked_scatter_(restored_mask, removed)

        weight.masked_fill_(mask, 0)
        self._undo.append(undo)
        self._changed.add(id(weight))

    @torch.no_grad()
    def overwrite(self, tensor: Tensor, values: Tensor) -> None:
        """Replace all of `tensor`'s values (for updates such as SparseGPT's), keeping the old ones."""
        original = tensor.detach().clone()
        self.nbytes += original.numel() * original.element_size()
        tensor.copy_(values)
        self._undo.append(torch.no_grad()(lambda: tensor.copy_(original)))
        self._changed.add(id(tensor))

    def on_undo(self, action: Callable[[], None], changes: Tensor | None = None) -> None:
        """Register an arbitrary undo step (for changes made otherwise, such as removing a layer).

        A step that restores a tensor's values must name it in `changes`: compressors that rely
        on dense weights (the prune fast path) ask `changed` before trusting a tensor.
        """
        self._undo.append(action)
        if changes is not None:
            self._changed.add(id(changes))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()
        self._changed.clear()
        self.nbytes = 0
