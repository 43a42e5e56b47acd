"""The model card (README.md) of an exported checkpoint: where it comes from, the trial's objectives,
how it was compressed and how to load it, written from its recipe."""

from __future__ import annotations

from typing import Any

from autoprune.recipe import FILE_NAME, Recipe

_LIST_SHOWN = 12  # entries of a per-layer list the card spells out


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        shown = ", ".join(_show(item) for item in value[:_LIST_SHOWN])
        return f"[{shown}{', ...' if len(value) > _LIST_SHOWN else ''}]"
    return str(value)


def model_card(recipe: Recipe, path: str) -> str:
    """Markdown with a Hugging Face metadata header; `path` is where the checkpoint was written."""
    model = recipe.config["model"]
    base = model.get("hub_id") or model["name"]
    baseline = f", baseline {recipe.baseline['name']}" if recipe.baseline else ""
    lines = [
        "---",
        "library_name: transformers",
        "tags: [autoprune, compressed]",
        *([f"base_model: {model['hub_id']}"] if model.get("hub_id") else []),
        "---",
        f"# {base}, compressed: study {recipe.study}, trial {recipe.trial}",
        "",
        f"Compressed by autoprune from {base} as trial {recipe.trial} of study {recipe.study}{baseline}, "
        f"rebuilt on the dense model with {recipe.calibration['mode']} calibration. "
        f"Everything that produced it is in `{FILE_NAME}`.",
        "",
        "## Objectives",
        "",
        "| objective | trial |",
        "|---|---|",
        *(f"| {name} | {_show(value)} |" for name, value in recipe.objectives.items()),
        "",
        f"Perplexity of this checkpoint on the study's evaluation windows: {_show(recipe.perplexity['exported'])}"
        + (f" (the trial's: {_show(recipe.perplexity['trial'])})." if "trial" in recipe.perplexity else "."),
        "",
        "## How it was compressed",
        "",
        *(
            f"- {name}: " + ", ".join(f"{key} {_show(value)}" for key, value in section.items())
            for name, section in recipe.sample.items()
        ),
        f"- decoder blocks: {recipe.blocks['dense'] - len(recipe.blocks['removed'])} of {recipe.blocks['dense']} kept"
        + (f", removed {recipe.blocks['removed']} (dense numbering)" if recipe.blocks["removed"] else ""),
        f"- calibration: {recipe.calibration['windows']} windows of {recipe.calibration['tokens']} tokens, "
        f"{recipe.calibration['data_hash']}",
        "",
        "## Loading",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM",
        f"model = AutoModelForCausalLM.from_pretrained({path!r})",
        "```",
    ]
    if recipe.runtime:
        lines += [
            "",
            f"Plain transformers runs it with a full-precision KV cache. The searched run-time settings "
            f"({', '.join(recipe.runtime)}) are applied by autoprune:",
            "",
            "```python",
            "from autoprune.api import load_compressed",
            f"model, new_cache = load_compressed({path!r})",
            "model.generate(input_ids, past_key_values=new_cache())  # cache=new_cache() where transformers renamed it",
            "```",
        ]
    versions = ", ".join(f"{name} {version}" for name, version in recipe.versions.items())
    lines += ["", f"Made with {versions}.", ""]
    return "\n".join(lines)
