"""Calibration and evaluation token windows, from the embedded corpus, local files or a hub dataset.

Calibration follows the field: `calib_windows` random windows of the model's context, drawn
with a fixed seed. Evaluation follows the perplexity convention: the evaluation text joined
with blank lines and cut into non-overlapping windows, of which the first `eval_windows` are
used (all of them when it is null).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from autoprune.corpus import SPLITS as CORPUS_SPLITS
from autoprune.corpus import corpus_text
from autoprune.errors import ConfigError

SOURCES = ("stdlib", "files", "hf")


@dataclass
class TextSource:
    """Where one body of text comes from (a `data.calibration` or `data.evaluation` entry)."""

    source: str = "stdlib"
    split: str = "eval"  # stdlib corpus split, or the dataset split for `hf`
    paths: tuple[str, ...] = ()  # for `files`
    dataset: str | None = None  # for `hf`, e.g. "wikitext"
    subset: str | None = None  # for `hf`, e.g. "wikitext-2-raw-v1"
    data_files: str | None = None  # for `hf`, e.g. one shard of C4
    text_field: str = "text"
    max_chars: int | None = None  # read no more text than this (stdlib and hf)


def check_source(text: TextSource, role: str) -> None:
    if text.source not in SOURCES:
        raise ConfigError(f"unknown data.{role}.source {text.source!r}; choose one of {', '.join(SOURCES)}")
    if text.source == "stdlib" and text.split not in CORPUS_SPLITS:
        raise ConfigError(f"data.{role}.split is {text.split!r}; the stdlib corpus has {', '.join(CORPUS_SPLITS)}")
    if text.source == "files":
        if not text.paths:
            raise ConfigError(f"data.{role}.paths is empty; list the text files to read")
        for path in text.paths:
            if not Path(path).is_file():
                raise ConfigError(f"data.{role}.paths: {path!r} is not a file")
    if text.source == "hf" and not text.dataset:
        raise ConfigError(f"data.{role}.dataset is not set; name a Hugging Face dataset")


def read_text(text: TextSource) -> str:
    if text.source == "stdlib":
        return corpus_text(text.split, max_chars=text.max_chars)
    if text.source == "files":
        return "\n\n".join(Path(path).read_text(encoding="utf-8") for path in text.paths)
    return _hub_text(text)


def _hub_text(text: TextSource) -> str:
    try:
        import datasets
    except ImportError:
        raise ConfigError("hub datasets need the `datasets` package: pip install datasets") from None
    try:
        rows = datasets.load_dataset(text.dataset, text.subset, data_files=text.data_files, split=text.split)
    except Exception as error:  # datasets raises many types for an unreachable hub
        raise ConfigError(
            f"could not load dataset {text.dataset!r} ({type(error).__name__}); without a hub use data=stdlib "
            f"or data.*.source=files"
        ) from error
    parts, size = [], 0
    for row in rows:
        parts.append(row[text.text_field])
        size += len(parts[-1]) + 2
        if text.max_chars is not None and size >= text.max_chars:
            break
    joined = "\n\n".join(parts)
    return joined if text.max_chars is None else joined[: text.max_chars]


def tokenize(tokenizer, text: str) -> Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def calibration_windows(ids: Tensor, context: int, count: int, seed: int) -> Tensor:
    """`count` windows of `context` tokens starting at seeded random offsets."""
    if len(ids) <= context:
        raise ConfigError(f"the calibration text has {len(ids)} tokens, fewer than one window of {context}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - context, (count,), generator=generator)
    return torch.stack([ids[start : start + context] for start in starts.tolist()])


def evaluation_windows(ids: Tensor, context: int, count: int | None) -> Tensor:
    """Consecutive non-overlapping windows of `context` tokens; the first `count` of them."""
    total = len(ids) // context
    if total == 0:
        raise ConfigError(f"the evaluation text has {len(ids)} tokens, fewer than one window of {context}")
    windows = ids[: total * context].view(total, context)
    return windows if count is None else windows[:count]
