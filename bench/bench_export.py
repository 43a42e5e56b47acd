"""Exported checkpoint sizes on the embedded model, per storage format.

    python bench/bench_export.py [HYDRA OVERRIDES...]

Compresses the dense model with each variant (dense, 50 % and 70 % unstructured Wanda, Wanda 2:4
and 1:4, 1 and 2 blocks removed with 50 % Wanda), saves it as `autoprune export` saves a checkpoint
(`autoprune.checkpoint.save_checkpoint`, safetensors) and loads it back with plain transformers.
Prints, per variant: the bytes of the saved weights file, and what the `size` scorer counts for
the same weights stored densely, with every pruned matrix as values + bitmask, and in the
smallest format of each matrix (`size_mb`, N:M-packed where the pattern allows), with the ratio of
each to the dense model's weights file. safetensors has no sparse format, so the file is the dense
figure whatever the sparsity; removed blocks are gone from it.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path


def main() -> None:
    import sys

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    from autoprune.builder import build_context
    from autoprune.checkpoint import save_checkpoint
    from autoprune.config import compose_config
    from autoprune.journal import Journal
    from autoprune.plan import prepare
    from autoprune.trial import compress

    transformers_logging.disable_progress_bar()  # its per-save bars would split the table
    plan = prepare(compose_config(["space=joint", "scorers=[size]", "calibration.mode=dense-once", *sys.argv[1:]]))
    context = build_context(plan, defaultdict(list))
    registry = context.registry
    [scorer] = plan.scorers
    wanda = {"metric": "wanda", "allocation": "uniform"}
    variants = {
        "dense": {},
        "50 % unstructured": {"prune": {**wanda, "sparsity": 0.5}},
        "70 % unstructured": {"prune": {**wanda, "sparsity": 0.7}},
        "2:4": {"prune": {**wanda, "pattern": "2:4"}},
        "1:4": {"prune": {**wanda, "pattern": "1:4"}},
        "1 block removed + 50 %": {"remove_layers": {"count": 1}, "prune": {**wanda, "sparsity": 0.5}},
        "2 blocks removed + 50 %": {"remove_layers": {"count": 2}, "prune": {**wanda, "sparsity": 0.5}},
    }
    for sample in variants.values():
        for name, section in sample.items():
            registry.compressor(name).prepare(context, section)
    dense_blocks = len(context.layout)
    print(f"embedded model, {dense_blocks} blocks, {plan.config.model.dtype} weights; MB = 10^6 bytes")
    print(f"\n{'':26s} {'file MB':>8s} {'dense MB':>9s} {'bitmask MB':>11s} {'size_mb':>8s}  formats")
    reference = None
    for name, sample in variants.items():
        journal = Journal()
        compress(context, [registry.compressor(c) for c in sample], sample, journal)
        figures = scorer.score(context)
        with tempfile.TemporaryDirectory() as directory:
            kept = list(context.layout.slots)
            save_checkpoint(context.model, None, kept, dense_blocks, Path(directory))
            file_mb = sum(f.stat().st_size for f in Path(directory).glob("*.safetensors")) / 1e6
            loaded = AutoModelForCausalLM.from_pretrained(directory)
            assert loaded.config.num_hidden_layers == len(kept)
        journal.restore()
        reference = reference or file_mb
        formats = ", ".join(
            f"{key.removeprefix('matrices.')} {int(value)}"
            for key, value in figures.items()
            if key.startswith("matrices.")
        )
        row = [file_mb, figures["dense_mb"], figures["bitmask_mb"], figures["size_mb"]]
        print(f"{name:26s} " + " ".join(f"{v:8.2f}" for v in row) + f"  {formats}")
        print(f"{'  ratio to dense file':26s} " + " ".join(f"{v / reference:8.2f}" for v in row))


if __name__ == "__main__":
    main()
