"""Wanda at the scale of a real model: a random-weight model with facebook/opt-1.3b's shapes.

    python bench/bench_scale.py [--layers 24] [--trials 5]

Built from the config (no download), in float32. Prints, measured side by side in one run:
- the Wanda prune step (all linears, dense-once statistics, rankings cached after the first
  step) divided by the time of one copy of all linear weights, the memory-bandwidth floor
  (goal <= 3), and the first step, which ranks every row once for the study;
- the peak resident memory during a study of `--trials` trials (prune, score, restore) on a
  few short calibration and evaluation windows, divided by the weights' bytes (goal <= 2).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import torch
from transformers import OPTConfig, OPTForCausalLM

from autoprune.calibration import collect_stats
from autoprune.context import StudyContext
from autoprune.journal import Journal
from autoprune.model import decoder_layout
from autoprune.registry import build_registry
from autoprune.trial import run_trial


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class PeakMemory:
    """Samples the resident set every 10 ms on a thread; `peak` is the largest seen."""

    def __init__(self) -> None:
        self.peak = resident_bytes()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.01)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()


def copy_seconds(weights: list[torch.Tensor]) -> float:
    """One copy of every weight into a reused buffer: what reading and writing them once costs."""
    buffer = torch.empty(max(w.numel() for w in weights))
    started = time.perf_counter()
    for weight in weights:
        buffer[: weight.numel()].view_as(weight).copy_(weight)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)

    started = time.perf_counter()
    config = OPTConfig(
        vocab_size=50272,
        hidden_size=2048,
        num_hidden_layers=args.layers,
        ffn_dim=8192,
        num_attention_heads=32,
        max_position_embeddings=2048,
        word_embed_proj_dim=2048,
    )  # facebook/opt-1.3b
    model = OPTForCausalLM(config).eval().requires_grad_(False)
    layout = decoder_layout(model)
    weights = [linear.weight for linear in layout.all_linears().values()]
    weight_bytes = sum(w.numel() * w.element_size() for w in weights)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(
        f"model: {model_bytes / 1e9:.2f} GB of parameters, {weight_bytes / 1e9:.2f} GB in {len(weights)} prunable linears "
        f"(built in {time.perf_counter() - started:.0f}s)",
        flush=True,
    )

    calibration = torch.randint(0, config.vocab_size, (4, 128))
    evaluation = torch.randint(0, config.vocab_size, (2, 128))
    stats = collect_stats(model, layout, calibration, {"sum_sq"})
    registry = build_registry()
    context = StudyContext(model, None, layout, calibration, evaluation, stats, registry)
    prune = registry.compressor("prune")

    copies = [copy_seconds(weights) for _ in range(3)]
    prune_steps = []
    for _ in range(4):  # the first step also ranks every row once for the study
        journal = Journal()
        started = time.perf_counter()
        prune.apply(context, {"metric": "wanda", "sparsity": 0.5}, journal)
        prune_steps.append(time.perf_counter() - started)
        journal.restore()
    copy_s, prune_s = statistics.median(copies), statistics.median(prune_steps[1:])
    print(f"one copy of all linear weights: {copy_s:.2f} s", flush=True)
    print(f"Wanda prune step, first (ranks once): {prune_steps[0]:.2f} s", flush=True)
    print(f"Wanda prune step (50 %):        {prune_s:.2f} s   ratio {prune_s / copy_s:.2f}x  (goal <= 3)", flush=True)

    scorers = [registry.scorer("perplexity"), registry.scorer("size")]
    with PeakMemory() as memory:
        for trial in range(args.trials):
            sparsity = 0.3 + 0.1 * trial
            result = run_trial(context, [prune], scorers, {"prune": {"metric": "wanda", "sparsity": sparsity}})
            seconds = " ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
            print(
                f"trial {trial}: sparsity {sparsity:.1f}  perplexity {result.values['perplexity']:.1f}  {seconds}",
                flush=True,
            )
    print(
        f"peak resident memory during {args.trials} trials: {memory.peak / 1e9:.2f} GB = "
        f"{memory.peak / model_bytes:.2f}x the weights' {model_bytes / 1e9:.2f} GB  (goal <= 2)"
    )


if __name__ == "__main__":
    main()
