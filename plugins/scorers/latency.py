"""Latency: time to first token and time per output token of the model as the trial left it.

A greedy generation of `new_tokens` after a prompt of `prompt_tokens` real evaluation tokens,
batch 1, with the cache the model runs with (`context.runtime.new_cache`: the packed KV cache
when the `kv_cache` compressor is in the trial, else transformers' default). Each repeat times the
prefill (the prompt's forward pass, which yields the first token) and the decode steps that yield
the other tokens, with `time.perf_counter`, the device synchronised before each reading (a no-op
on a CPU); `warmup` generations run untimed first. A repeat's decode figure is its mean step, so
work done once every few steps (the packed cache quantizing a group) counts at its share.

The objective `latency_ms` is the median over `repeats` of the mean decode step (`measure:
decode`, the default) or of the prefill (`measure: prefill`). Both medians are logged with their
interquartile range (`*_iqr_ms`: the spread, which other load on the machine widens) and their
ratio to the dense model's (`decode_ratio`, `prefill_ratio`), which is timed once per study in the
same process, before any trial. The thread count, device and torch version the figures hold for
are tags of the study's parent run.

What moves latency, and what does not:
- Unstructured sparsity does not: the zeros stay in dense matrices that dense kernels multiply at
  full cost. This scorer times what runs and gives no discount for zeros.
- N:M sparsity does not here either: only sparse kernels (2:4 on recent GPUs through a
  semi-structured tensor layout) turn it into time, and a study's trials keep dense tensors.
- Removed blocks do: the model runs fewer layers (the embeddings, the head and the per-step
  overhead stay, so removing half the blocks saves less than half the time).
- A quantized KV cache saves memory and, in plain torch on a CPU, costs time: every step
  dequantizes what it reads. It pays off only where memory bandwidth or capacity is the limit.

Settings (`scoring.latency`):
- `prompt_tokens` P: null (the default) is half the evaluation window, at most 512;
- `new_tokens` N: null (the default) is an eighth of the window, from 2 to 128;
- `repeats` (at least 5, default 5), `warmup` (default 1), `measure` (decode or prefill).
P must fit in the evaluation window the prompt is cut from, and P + N in the model's positions
(checked once the model has loaded, before any trial). On the embedded model (128-token windows)
that is P = 64 and N = 16: six generations, about half a second per trial on one idle CPU core
(more on a loaded machine, much more when several torch threads compete for busy cores). A model
evaluated on 2048-token windows gets P = 512 and N = 128.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from autoprune.plugin import ConfigError, Scorer, StudyContext, cache_keyword, hookimpl, progress, returned_cache

MEASURES = ("decode", "prefill")
MIN_REPEATS = 5
DENSE = "latency.dense"  # context.cache key of the dense model's timing


@dataclass(frozen=True)
class Timing:
    """Milliseconds: the median and interquartile range over repeats of the prefill and of the
    mean decode step."""

    prefill_ms: float
    prefill_iqr_ms: float
    decode_ms: float
    decode_iqr_ms: float

    def of(self, measure: str) -> float:
        return self.decode_ms if measure == "decode" else self.prefill_ms

    def ratios(self, dense: Timing) -> dict[str, float]:
        return {"decode_ratio": self.decode_ms / dense.decode_ms, "prefill_ratio": self.prefill_ms / dense.prefill_ms}


def median_and_iqr(values: list[float]) -> tuple[float, float]:
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), quartiles[2] - quartiles[0]


def _whole(key: str, value: Any, low: int, high: int, null_means: str | None = None) -> None:
    if value is None and null_means:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        null = f", or null for {null_means}" if null_means else ""
        raise ConfigError(f"{key} is {value!r}; use a whole number from {low} to {high}{null}")


class Clock:
    """Wall-clock milliseconds, read once the device has finished the work queued on it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.synchronize = torch.get_device_module(device).synchronize  # torch.cpu's does nothing

    def now(self) -> float:
        self.synchronize(self.device)
        return time.perf_counter() * 1000


@torch.no_grad()
def timed_generation(
    model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, cache: Any, clock: Clock
) -> tuple[float, float, torch.Tensor]:
    """One greedy generation of `new_tokens` after `prompt` ([1, P]) into `cache` (None: the model's
    default); returns (prefill ms, mean decode-step ms, the generated ids [1, N])."""
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    keyword = cache_keyword(model)
    started = clock.now()
    output = model(prompt, use_cache=True, **{keyword: cache}, **last_only)  # as generate() prefills
    token = output.logits[:, -1:].argmax(-1)
    prefilled = clock.now()
    generated = [token]
    for _ in range(new_tokens - 1):
        output = model(token, use_cache=True, **{keyword: returned_cache(output)})
        token = output.logits[:, -1:].argmax(-1)
        generated.append(token)
    finished = clock.now()
    return prefilled - started, (finished - prefilled) / (new_tokens - 1), torch.cat(generated, dim=1)


class Latency(Scorer):
    name = "latency"
    objectives = {"latency_ms": "minimize"}
    params = {"prompt_tokens": None, "new_tokens": None, "repeats": MIN_REPEATS, "warmup": 1, "measure": "decode"}

    def check(self, section: Mapping[str, Any]) -> None:
        _whole("prompt_tokens", section.get("prompt_tokens"), 1, 1 << 20, "half the evaluation window")
        _whole("new_tokens", section.get("new_tokens"), 2, 1 << 20, "an eighth of the evaluation window")
        _whole("repeats", section.get("repeats", MIN_REPEATS), MIN_REPEATS, 10_000)
        _whole("warmup", section.get("warmup", 1), 0, 10_000)
        measure = section.get("measure", "decode")
        if measure not in MEASURES:
            raise ConfigError(f"measure is {measure!r}; use one of {', '.join(MEASURES)}")

    def shape(self, context: StudyContext) -> tuple[int, int]:
        """(prompt tokens, new tokens) for this model; refuses a generation longer than it can run."""
        window = context.evaluation.shape[1]
        prompt = self.settings["prompt_tokens"] or min(512, window // 2)
        new = self.settings["new_tokens"] or max(2, min(128, window // 8))
        if prompt > window:
            raise ConfigError(
                f"scoring.latency: prompt_tokens is {prompt}, longer than the {window}-token evaluation windows "
                f"it is cut from; use {window} or less"
            )
        positions = getattr(context.model.config, "max_position_embeddings", None)
        if positions is not None and prompt + new > positions:
            raise ConfigError(
                f"scoring.latency: prompt_tokens + new_tokens is {prompt + new}, more than the model's "
                f"{positions} positions; lower them (e.g. scoring.latency.new_tokens={max(2, positions - prompt)})"
            )
        return prompt, new

    def measure(self, context: StudyContext) -> Timing:
        """Time `warmup` untimed and `repeats` timed generations of the model as it runs now."""
        prompt_tokens, new_tokens = self.shape(context)
        device = next(context.model.parameters()).device
        prompt = context.evaluation[:1, :prompt_tokens].to(device)
        clock = Clock(device)
        new_cache = context.runtime.new_cache or (lambda: None)  # None: transformers' default cache
        warmup, repeats = self.settings["warmup"], self.settings["repeats"]
        runs = [
            timed_generation(context.model, prompt, new_tokens, new_cache(), clock)
            for _ in progress(range(warmup + repeats), "latency", unit="generation")
        ][warmup:]
        prefill = median_and_iqr([prefill_ms for prefill_ms, _, _ in runs])
        decode = median_and_iqr([decode_ms for _, decode_ms, _ in runs])
        return Timing(*prefill, *decode)

    def prepare(self, context: StudyContext) -> dict[str, float]:
        dense = self.measure(context)
        context.cache[DENSE] = dense
        return {"latency_ms": dense.of(self.settings["measure"]), **vars(dense)}

    def score(self, context: StudyContext) -> dict[str, float]:
        timing = self.measure(context)
        dense: Timing | None = context.cache.get(DENSE)
        ratios = timing.ratios(dense) if dense else {}
        return {"latency_ms": timing.of(self.settings["measure"]), **vars(timing), **ratios}


@hookimpl
def register_scorers() -> list[Scorer]:
    return [Latency()]
