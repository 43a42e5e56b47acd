"""KV-cache bits on the embedded model: uniform KIVI against a per-layer search, the packed cache's
bytes against the formula, and its decode time against transformers' default cache.

    python bench/bench_kv.py [--trials 50] [--seed 0] [--skip-search] [HYDRA OVERRIDES...]

Prints, with the group size and residual of `space=joint` for the model (`model.kv_group_size`,
`model.kv_residual`):

1. perplexity and KV-cache MB (the `kv_cache_mb` objective: `serving.context_length` tokens, one
   sequence) at uniform 2, 3, 4, 8 and 16 bits for keys and values;
2. the Pareto front of `--trials` trials of the study's TPE sampler over per-layer key and value
   bits alone, once on its own and once seeded with uniform 4 and 2 bits (as a study's baselines are); the search scores perplexity on the even evaluation windows and every figure printed is measured
   on the odd ones, so no point is judged on the windows it was picked on;
3. whether each uniform point is dominated or matched by the front, and the front's best perplexity
   within uniform 4-bit's cache size (the same mean bit width);
4. bytes per token of a real packed cache after a forward of the serving length, against DESIGN.md's
   formula 2·heads·head_dim·[(T−R)·(b + 32/G)/8 + e·R] / T per layer (e: bytes of an unquantized value);
5. decode time per token (greedy, batch 1, median of `--repeats` after a warm-up) with the packed
   cache against the default cache: plain-torch dequantization of the whole cache at every step
   costs time on a CPU, and this says how much.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections import defaultdict

import optuna
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--skip-search", action="store_true", help="only the uniform points, bytes and decode time")
    args, overrides = parser.parse_known_args()

    from autoprune.builder import build_context
    from autoprune.config import compose_config
    from autoprune.journal import Journal
    from autoprune.pareto import pareto_front
    from autoprune.plan import prepare
    from autoprune.runtime import cache_keyword
    from autoprune.space import SearchSpace
    from autoprune.trial import run_trial

    plan = prepare(compose_config(["space=joint", *overrides]))
    context = build_context(plan, defaultdict(list))
    section = plan.config.space["kv_cache"]
    group, residual = section["group_size"], section["residual"]
    registry = context.registry
    kv, perplexity, size = registry.compressor("kv_cache"), registry.scorer("perplexity"), registry.scorer("kv_cache")
    searching = dataclasses.replace(context, evaluation=context.evaluation[0::2])
    reporting = dataclasses.replace(context, evaluation=context.evaluation[1::2])
    tokens, _ = reporting.serving_shape()
    blocks = len(context.layout)

    def measure(where, params) -> tuple[float, float]:
        values = run_trial(where, [kv], [perplexity, size], {"kv_cache": params}).values
        return values["perplexity"], values["kv_cache_mb"]

    constants = {"group_size": group, "residual": residual}
    print(
        f"embedded model: {blocks} layers, groups of {group}, residual {residual}, KV cache sized for {tokens} tokens; "
        f"search on {len(searching.evaluation)} windows, figures on {len(reporting.evaluation)}"
    )
    uniform = {bits: measure(reporting, {"bits": bits, **constants}) for bits in (2, 3, 4, 8, 16)}
    print("\n1. uniform bits       perplexity   kv_cache_mb")
    for bits, (ppl, mb) in uniform.items():
        print(f"   {bits:2d}-bit keys+values  {ppl:10.3f}   {mb:11.4f}")

    space = SearchSpace.parse(
        {
            "kv_cache": {
                "key_bits": {"choices": [2, 3, 4, 6, 8, 16], "per_layer": True},
                "value_bits": {"choices": [2, 3, 4, 6, 8, 16], "per_layer": True},
                **constants,
            }
        }
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fronts = {}
    for label, seeds in (
        () if args.skip_search else (("search alone", []), ("seeded with uniform 4 and 2 bits", [4, 2]))
    ):
        started = time.perf_counter()
        front = search(space, blocks, seeds, args, lambda params: measure(searching, params))
        front = [(*measure(reporting, params), mean_bits(params), params) for params in front]
        kept = pareto_front({i: point[:2] for i, point in enumerate(front)}, ["minimize", "minimize"])
        fronts[label] = sorted((front[i] for i in kept), key=lambda point: point[1])
        print(
            f"\n2. {label}: front of {args.trials} TPE trials over per-layer bits "
            f"({time.perf_counter() - started:.0f}s), measured on the report windows"
        )
        print("   perplexity   kv_cache_mb   mean bits   key bits / value bits per layer")
        for ppl, mb, bits, params in fronts[label]:
            print(f"   {ppl:10.3f}   {mb:11.4f}   {bits:9.2f}   {params['key_bits']} / {params['value_bits']}")

    if fronts:
        print("\n3. is each uniform point dominated or matched by the front?")
    ppl4, mb4 = uniform[4]
    for label, front in fronts.items():
        print(f"   {label}:")
        for bits, (ppl, mb) in uniform.items():
            better = [p for p in front if p[0] <= ppl and p[1] <= mb]
            verdict = f"yes, by {better[0][0]:.3f} at {better[0][1]:.4f} MB" if better else "no"
            print(f"     {bits:2d}-bit ({ppl:.3f}, {mb:.4f} MB)  {verdict}")
        within = [p for p in front if p[1] <= mb4]
        if within:
            best = min(within, key=lambda p: p[0])
            print(
                f"     best perplexity within uniform 4-bit's {mb4:.4f} MB: {best[0]:.3f} (mean {best[2]:.2f} bits) "
                f"vs uniform 4-bit {ppl4:.3f}: ratio {best[0] / ppl4:.4f}"
            )
        else:
            print(f"     no front point within uniform 4-bit's {mb4:.4f} MB")

    print("\n4. bytes per token of the packed cache (one sequence, all layers)")
    heads, head_dim = context.model.config.num_attention_heads, context.model.config.hidden_size
    head_dim //= heads
    element = next(context.model.parameters()).element_size()
    window = context.evaluation[:1, :tokens]
    print("   bits   measured   formula   measured/formula")
    for bits in (2, 3, 4, 6, 8, 16):
        journal = Journal()
        kv.apply(context, {"bits": bits, **constants}, journal)
        cache = context.runtime.new_cache()
        with torch.no_grad():
            context.model(window, **{cache_keyword(context.model): cache})
        journal.restore()
        if bits == 16:
            formula = 2 * heads * head_dim * element * tokens
        else:
            formula = 2 * heads * head_dim * ((tokens - residual) * (bits + 32 / group) / 8 + element * residual)
        formula *= blocks
        print(f"   {bits:4d}   {cache.nbytes / tokens:8.0f}   {formula / tokens:7.0f}   {cache.nbytes / formula:16.3f}")

    print(f"\n5. decode time per token: greedy, batch 1, {args.new_tokens} new tokens, median of {args.repeats}")
    prompt = context.evaluation[:1, : max(1, tokens - args.new_tokens)]
    default_ms = decode_ms(context, None, prompt, args)
    print(f"   default cache           {default_ms:7.2f} ms/token")
    for bits in (16, 4, 2):
        journal = Journal()
        kv.apply(context, {"bits": bits, **constants}, journal)
        ms = decode_ms(context, context.runtime.new_cache, prompt, args)
        journal.restore()
        print(f"   packed, {bits:2d}-bit          {ms:7.2f} ms/token   {ms / default_ms:.2f}x the default cache")


def mean_bits(params: dict) -> float:
    return (sum(params["key_bits"]) + sum(params["value_bits"])) / (2 * len(params["key_bits"]))


def search(space, blocks: int, seeds: list[int], args, objective) -> list[dict]:
    """The study's own TPE sampler over per-layer bits; `seeds` are uniform widths enqueued first
    (as per-layer parameters, so the sampler learns from them). Returns the front's distinct samples."""
    sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=10, multivariate=True, group=True)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for bits in seeds:
        study.enqueue_trial(
            {f"kv_cache.{kind}.{i}": bits for kind in ("key_bits", "value_bits") for i in range(blocks)}
        )
    samples = {}
    for _ in range(args.trials):
        trial = study.ask()
        samples[trial.number] = space.sample(trial, {"kv_cache": blocks})["kv_cache"]
        study.tell(trial, list(objective(samples[trial.number])))
    distinct = {repr(samples[t.number]): samples[t.number] for t in study.best_trials}
    return list(distinct.values())


def decode_ms(context, new_cache, prompt: torch.Tensor, args) -> float:
    """Median milliseconds per decoded token, the prefill's time taken out."""
    from autoprune.runtime import cache_keyword

    model = context.model

    def run(new_tokens: int) -> float:
        cache = new_cache() if new_cache else None
        started = time.perf_counter()
        with torch.no_grad():
            model.generate(
                prompt,
                **{cache_keyword(model): cache},
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
            )
        return time.perf_counter() - started

    run(args.new_tokens)  # warm-up
    times = [(run(args.new_tokens) - run(1)) / (args.new_tokens - 1) for _ in range(args.repeats)]
    return statistics.median(times) * 1000


if __name__ == "__main__":
    main()
