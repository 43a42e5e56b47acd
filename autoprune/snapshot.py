"""Dense weights written once to an unlinked temporary file, read back to undo a pruning.

The undo log keeps the values a trial removes: at sparsity s that is s times the pruned
weights' bytes on top of the model. Reading a dense matrix back from this file instead costs
no process memory (the file sits in the OS page cache while there is room, on disk otherwise)
and about two copies' time per restore, so large models can be searched at high sparsity. The
file has no name and disappears with the process; TMPDIR chooses the disk it lives on.
"""

from __future__ import annotations

import os
import tempfile

import torch
from torch import Tensor


def _bytes_of(tensor: Tensor) -> Tensor:
    """A flat uint8 view of a contiguous tensor's storage."""
    return tensor.reshape(-1).view(torch.uint8)


class WeightSnapshot:
    """Tensors saved by key; `restore` writes a saved tensor's values back into a tensor of its shape."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="autoprune-weights-")
        self._places: dict[str, tuple[int, int]] = {}  # key -> (offset, bytes)
        self._end = 0

    def __contains__(self, key: str) -> bool:
        return key in self._places

    def save(self, key: str, tensor: Tensor) -> None:
        data = _bytes_of(tensor.detach().cpu().contiguous()).numpy()
        written = 0
        while written < data.nbytes:
            written += os.pwrite(self._file.fileno(), data[written:], self._end + written)
        self._places[key] = (self._end, data.nbytes)
        self._end += data.nbytes

    @torch.no_grad()
    def restore(self, key: str, tensor: Tensor) -> None:
        offset, size = self._places[key]
        in_place = tensor.device.type == "cpu" and tensor.is_contiguous()
        target = tensor if in_place else torch.empty(tensor.shape, dtype=tensor.dtype)
        view = memoryview(_bytes_of(target.detach()).numpy())
        if view.nbytes != size:
            raise ValueError(f"snapshot {key!r} holds {size} bytes; the tensor to restore has {view.nbytes}")
        done = 0
        while done < size:
            done += os.preadv(self._file.fileno(), [view[done:]], offset + done)
        if not in_place:
            tensor.copy_(target)
