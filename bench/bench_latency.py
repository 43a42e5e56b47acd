"""Latency on the embedded model: what moves decode and prefill time, and what does not.

    python bench/bench_latency.py [--rounds 5] [--threads N] [HYDRA OVERRIDES...]

Times, with the `latency` scorer exactly as a study runs it (`scoring.latency.*` overrides apply:
prompt and new tokens, repeats, warm-up), the dense model and its compressed variants: 50 %
unstructured Wanda, Wanda 2:4, 1 and 2 blocks removed (block influence, compensated), uniform 4-bit
and 2-bit KV cache (the group size and residual of `space=joint` for the model). The variants are
measured interleaved: every round times the dense model, then each variant once, in a rotated
order, so a change in the machine's load falls on all of them.

Prints one row per variant: decode ms per token and prefill ms (the medians over rounds of the
scorer's medians over repeats, with the median of its interquartile ranges in brackets), and each
figure's ratio to the dense model timed in the same round (median over rounds, the range over
rounds after it). Expected: zeros change nothing (dense kernels), removed blocks cut time, a
quantized cache costs time in plain torch on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import torch

KEYS = ("decode_ms", "decode_iqr_ms", "prefill_ms", "prefill_iqr_ms", "decode_ratio", "prefill_ratio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args, overrides = parser.parse_known_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from autoprune.builder import build_context
    from autoprune.config import compose_config
    from autoprune.plan import prepare
    from autoprune.trial import run_trial

    plan = prepare(compose_config(["space=joint", "scorers=[latency]", *overrides]))
    context = build_context(plan, defaultdict(list))
    [scorer] = plan.scorers
    kv = {key: plan.config.space["kv_cache"][key] for key in ("group_size", "residual")}
    variants = {
        "50 % unstructured (wanda)": {"prune": {"metric": "wanda", "sparsity": 0.5}},
        "2:4 (wanda)": {"prune": {"metric": "wanda", "pattern": "2:4"}},
        "1 block removed": {"remove_layers": {"count": 1}},
        "2 blocks removed": {"remove_layers": {"count": 2}},
        "KV cache 4-bit": {"kv_cache": {"bits": 4, **kv}},
        "KV cache 2-bit": {"kv_cache": {"bits": 2, **kv}},
    }
    registry = context.registry
    for sample in variants.values():
        for name, section in sample.items():
            registry.compressor(name).prepare(context, section)

    prompt_tokens, new_tokens = scorer.shape(context)
    device = next(context.model.parameters()).device
    print(
        f"embedded model, {len(context.layout)} blocks; prompt {prompt_tokens} tokens, {new_tokens} new, greedy, batch 1; "
        f"{scorer.settings['repeats']} repeats after {scorer.settings['warmup']} warm-up, {args.rounds} rounds; "
        f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    figures: dict[str, list[dict[str, float]]] = defaultdict(list)
    names = list(variants)
    for round_ in range(args.rounds):
        dense = scorer.prepare(context)  # the dense timing this round's ratios are to
        figures["dense"].append({**dense, "decode_ratio": 1.0, "prefill_ratio": 1.0})
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            sample = variants[name]
            compressors = [registry.compressor(compressor) for compressor in sample]
            info = run_trial(context, compressors, [scorer], sample).info
            figures[name].append({key: info[f"latency.{key}"] for key in KEYS})

    print(
        f"\n{'':28s} {'decode ms/token (IQR)':>22s}  {'ratio to dense':>20s}  {'prefill ms (IQR)':>18s}  {'ratio to dense':>20s}"
    )
    for name in ["dense", *names]:
        rows = figures[name]
        decode = f"{median(rows, 'decode_ms'):.2f} ({median(rows, 'decode_iqr_ms'):.2f})"
        prefill = f"{median(rows, 'prefill_ms'):.2f} ({median(rows, 'prefill_iqr_ms'):.2f})"
        print(
            f"{name:28s} {decode:>22s}  {ratio(rows, 'decode_ratio'):>20s}  {prefill:>18s}  {ratio(rows, 'prefill_ratio'):>20s}"
        )


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def ratio(rows: list[dict[str, float]], key: str) -> str:
    """The median ratio over rounds, then its range."""
    values = [row[key] for row in rows]
    return f"{median(rows, key):.2f} [{min(values):.2f}-{max(values):.2f}]"


if __name__ == "__main__":
    main()
