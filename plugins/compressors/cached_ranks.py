"""The fast path of the prune compressor: row-wise metrics under dense-once statistics.

With statistics fixed for the study, a metric's ranking of each row never changes between
trials; only the ratio does. So the first trial stores every weight's place in its row (int16:
half a float32 weight) and the dense weights in a `WeightSnapshot` on disk; later trials prune
a matrix with a handful of streaming passes (compare the places with k, multiply), and undo it
by reading the dense matrix back. The undo log holds nothing for these weights, so a trial's
memory stays at the model plus the places, whatever its sparsity.

It applies only to weights no earlier compressor changed in the same trial (the journal
knows), since places and snapshot describe the dense model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from autoprune.plugin import Journal, LinearStats, PruningMetric, StudyContext, WeightSnapshot
from autoprune_plugins.sparsity import row_positions


class CachedRanks:
    """Row places of one metric (and parameter set) at a time, plus the dense snapshot, for a study."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.places: dict[str, Tensor] = {}
        self.snapshot = WeightSnapshot()
        self._scratch: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    @classmethod
    def of(cls, context: StudyContext) -> CachedRanks:
        return context.cache.setdefault("prune.cached_ranks", cls())

    def prune(
        self,
        metric: PruningMetric,
        metric_params: Mapping[str, Any],
        name: str,
        linear: nn.Linear,
        stats: LinearStats,
        ratio: float,
        journal: Journal,
    ) -> int:
        """Zero the floor(ratio · columns) lowest-scored weights of each row; return how many."""
        weight = linear.weight
        k = int(weight.shape[1] * ratio)
        if k == 0:
            return 0
        places = self._places(metric, metric_params, name, weight, stats)
        if name not in self.snapshot:
            self.snapshot.save(name, weight)
        # keep = clamp(place − (k − 1), 0, 1): 0 for the k lowest places, 1 for the rest
        keep_int = self._buffer(places)
        torch.sub(places, k - 1, out=keep_int).clamp_(0, 1)
        keep = self._buffer(weight).copy_(keep_int)  # a same-dtype multiply is several times faster
        with torch.no_grad():
            weight.mul_(keep)
        journal.on_undo(lambda: self.snapshot.restore(name, weight), changes=weight)
        return k * weight.shape[0]

    def _places(self, metric, metric_params, name: str, weight: Tensor, stats: LinearStats) -> Tensor:
        key = (metric.name, tuple(sorted(metric_params.items())))
        if key != self.key:  # one metric's places at a time: switching costs a re-ranking, never memory
            self.key, self.places = key, {}
        if name not in self.places:
            self.places[name] = row_positions(metric.score(weight, stats, **metric_params))
        return self.places[name]

    def _buffer(self, like: Tensor) -> Tensor:
        """Reused scratch of `like`'s dtype and shape: fresh allocations would page-fault every trial."""
        slot = (like.dtype, like.device)
        buffer = self._scratch.get(slot)
        if buffer is None or buffer.numel() < like.numel():
            buffer = self._scratch[slot] = torch.empty(like.numel(), dtype=like.dtype, device=like.device)
        return buffer[: like.numel()].view_as(like)
