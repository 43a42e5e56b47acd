"""What every compressor and scorer of a study can read: the model, its data and statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from autoprune.calibration import LinearStats
from autoprune.model import DecoderLayout
from autoprune.registry import Registry
from autoprune.runtime import Runtime, plain_cache_bytes


@dataclass(frozen=True)
class Serving:
    """The deployment the memory objectives describe: `context_length` tokens for `batch_size` sequences."""

    context_length: int
    batch_size: int = 1


@dataclass
class StudyContext:
    """Built once per study; compressors change `model` in place and the trial undoes it."""

    model: nn.Module
    tokenizer: Any
    layout: DecoderLayout
    calibration: Tensor  # (windows, context) token ids
    evaluation: Tensor  # (windows, context) token ids
    stats: dict[
        str, LinearStats
    ]  # dense model's, by qualified linear name; in sequential mode only what allocations need
    registry: Registry
    calibration_mode: str = "dense-once"  # or "sequential": compressors collect per block, per trial
    calibration_batch_size: int = 8
    cache: dict[str, Any] = field(default_factory=dict)  # study-lifetime caches of plugins (e.g. rankings)
    repeated: bool = True  # trials restore and compress again, so per-study caches pay off (False: one-shot API)
    runtime: Runtime = field(default_factory=Runtime)  # how the model runs beyond its weights (autoprune.runtime)
    serving: Serving | None = None  # the `serving:` config; None: one sequence of an evaluation window

    def serving_shape(self) -> tuple[int, int]:
        """(tokens, batch) the memory objectives size the KV cache for."""
        if self.serving is None:
            return self.evaluation.shape[1], 1
        return self.serving.context_length, self.serving.batch_size

    def kv_cache_bytes(self, tokens: int, batch: int) -> int:
        """Bytes of the KV cache the model runs with now, holding `tokens` for `batch` sequences."""
        if self.runtime.cache_bytes is not None:
            return self.runtime.cache_bytes(tokens, batch)
        return plain_cache_bytes(self.model, self.layout, tokens, batch)
