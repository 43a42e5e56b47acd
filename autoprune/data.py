"""Calibration and evaluation token windows, from the embedded corpus, local files or a hub dataset.

Calibration follows the field: `calib_windows` random windows of the model's context, drawn
with a fixed seed, either from the whole text (`sampling: windows`) or as the Wanda and
SparseGPT references draw them from C4 (`sampling: documents`: Python's `random` seeded once,
a random document longer than the context, then a random window inside it), so the same seed
gives the same windows as those codebases. Evaluation follows the perplexity convention: the
evaluation text joined with blank lines and cut into non-overlapping windows, of which the
first `eval_windows` are used (all of them when it is null).
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from autoprune.corpus import SPLITS as CORPUS_SPLITS
from autoprune.corpus import corpus_text
from autoprune.errors import ConfigError
from autoprune.probes import ReadableFile
from autoprune.progress import progress
from autoprune.validation import Each, OneOf, Range, Text, rules

SOURCES = ("stdlib", "files", "hf")
SAMPLINGS = ("windows", "documents")


@dataclass
class TextSource:
    """Where one body of text comes from (a `data.calibration` or `data.evaluation` entry)."""

    source: str = field(default="stdlib", metadata=rules(OneOf(SOURCES)))
    split: str = field(default="eval", metadata=rules(Text(100)))  # stdlib corpus split, or the dataset split for `hf`
    paths: tuple[str, ...] = field(default=(), metadata=rules(Each(ReadableFile())))  # for `files`
    dataset: str | None = field(default=None, metadata=rules(Text(200)))  # for `hf`, e.g. "wikitext"
    subset: str | None = field(default=None, metadata=rules(Text(200)))  # for `hf`, e.g. "wikitext-2-raw-v1"
    data_files: str | None = field(default=None, metadata=rules(Text(4096)))  # for `hf`, e.g. one shard of C4
    text_field: str = field(default="text", metadata=rules(Text(200)))
    # read no more text than this (stdlib and hf)
    max_chars: int | None = field(default=None, metadata=rules(Range(1, 10**12)))
    # calibration only: "windows" of the joined text, or "documents" (the references' C4 way)
    sampling: str = field(default="windows", metadata=rules(OneOf(SAMPLINGS)))
    special_tokens: bool = False  # tokenize with the tokenizer's special tokens (BOS), as the references do


def check_source(text: TextSource, role: str, context: int | None = None) -> None:
    """What one text source needs beyond its fields' own rules: the fields its `source` reads, and
    (with the window length known) files long enough for one window. Reads no file's contents."""
    if text.source == "stdlib" and text.split not in CORPUS_SPLITS:
        raise ConfigError(f"data.{role}.split is {text.split!r}; the stdlib corpus has {', '.join(CORPUS_SPLITS)}")
    if text.source == "files":
        if not text.paths:
            raise ConfigError(f"data.{role}.paths is empty; list the text files to read")
        Each(ReadableFile()).check(f"data.{role}.paths", text.paths)
        size = sum(Path(path).stat().st_size for path in text.paths)
        if context is not None and size + 2 * len(text.paths) <= context:  # a token is at least one byte
            raise ConfigError(
                f"data.{role}.paths hold {size} bytes, fewer than one window of {context} tokens; "
                "add text or lower model.context"
            )
    if text.source == "hf":
        if not text.dataset:
            raise ConfigError(f"data.{role}.dataset is not set; name a Hugging Face dataset")
        if importlib.util.find_spec("datasets") is None:
            raise ConfigError(
                f"data.{role}.source is hf, which needs the datasets package; pip install datasets "
                "(or use data=stdlib, or data.*.source=files)"
            )


def read_text(text: TextSource) -> str:
    """The whole text, documents joined by blank lines."""
    if text.source == "stdlib":
        return corpus_text(text.split, max_chars=text.max_chars)
    return "\n\n".join(read_documents(text))


def read_documents(text: TextSource) -> list[str]:
    """The text as documents: one per file, one per dataset row, one per stdlib paragraph."""
    if text.source == "stdlib":
        return corpus_text(text.split, max_chars=text.max_chars).split("\n\n")
    if text.source == "files":
        return [Path(path).read_text(encoding="utf-8") for path in text.paths]
    return _hub_documents(text)


def _hub_documents(text: TextSource) -> list[str]:
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
    for row in progress(rows, f"reading {text.dataset}", unit="doc"):
        parts.append(row[text.text_field])
        size += len(parts[-1]) + 2
        if text.max_chars is not None and size >= text.max_chars:
            break
    return parts


def tokenize(tokenizer, text: str, special_tokens: bool = False) -> Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=special_tokens)["input_ids"], dtype=torch.long)


def document_windows(
    documents: list[str], tokenizer, context: int, count: int, seed: int, special_tokens: bool = True
) -> Tensor:
    """The references' C4 sampling: per window, a random document longer than `context` tokens,
    then a random window inside it, all from one `random.Random(seed)` stream."""
    rng = random.Random(seed)
    windows = []
    for _ in progress(range(count), "calibration documents", unit="window"):
        for _attempt in range(10_000):
            ids = tokenizer(documents[rng.randint(0, len(documents) - 1)], add_special_tokens=special_tokens)[
                "input_ids"
            ]
            if len(ids) > context:
                break
        else:
            raise ConfigError(f"no calibration document is longer than {context} tokens; use sampling: windows")
        start = rng.randint(0, len(ids) - context - 1)
        windows.append(torch.tensor(ids[start : start + context], dtype=torch.long))
    return torch.stack(windows)


def calibration_set(text: TextSource, tokenizer, context: int, count: int, seed: int) -> Tensor:
    """The calibration windows a data config describes."""
    if text.sampling == "documents":
        return document_windows(read_documents(text), tokenizer, context, count, seed, text.special_tokens)
    return calibration_windows(tokenize(tokenizer, read_text(text), text.special_tokens), context, count, seed)


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
