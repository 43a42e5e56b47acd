"""The project's own multiple-choice task: the true end of a held-out sentence among the ends of others.

Built at run time from the study's evaluation text (by default the embedded model's held-out
docstrings, which it never trained on), so no third-party data is needed. For each sentence of
plain prose, the context is the sentence without its last `ENDING_WORDS` words, after at most
`LEAD_WORDS` words of its paragraph before it; the answer is those last words; the distractors are
the last words of other sentences of the same text, drawn among those of the nearest length in
characters, so that neither length nor fluency alone gives the answer away: picking it takes the
context. Choices and items are shuffled with a fixed seed: the same text always gives the same task.

The items go to a JSONL file beside an lm-eval task YAML that reads it through the `json` builder
of `datasets` (which works offline), so the harness runs it like any task of its own.
"""

from __future__ import annotations

import bisect
import json
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

TASK = "autoprune_continuation"
CHOICES = 4  # chance is 1 / CHOICES
ENDING_WORDS = 4
LEAD_WORDS = 40  # with the sentence, well within the embedded model's 128-token context
MAX_ITEMS = 400
SEED = 0
WORDS = (8, 24)  # sentences shorter or longer than this are left out
PROSE = 0.9  # least share of letters and spaces in a kept sentence (code and tables are left out)
NEAREST = 6  # distractors are drawn among this many endings nearest in length
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _is_prose(sentence: str) -> bool:
    words = len(sentence.split())
    letters = sum(c.isalpha() or c.isspace() for c in sentence) / max(1, len(sentence))
    return WORDS[0] <= words <= WORDS[1] and sentence.endswith(".") and letters >= PROSE


def passages(text: str) -> Iterator[tuple[str, str]]:
    """(lead, sentence) for each distinct sentence of prose in `text`, in order: the lead is the
    end of its paragraph before it (paragraphs are split by blank lines)."""
    seen: set[str] = set()
    for paragraph in text.split("\n\n"):
        sentences = _SENTENCE_END.split(" ".join(paragraph.split()))
        for position, sentence in enumerate(sentences):
            if sentence in seen or not _is_prose(sentence):
                continue
            seen.add(sentence)
            yield " ".join(" ".join(sentences[:position]).split()[-LEAD_WORDS:]), sentence


def _nearest_in_length(endings: list[str], lengths: list[int], ending: str) -> list[str]:
    """The `NEAREST` other endings closest to `ending` in length (`endings` sorted by their `lengths`)."""
    middle = bisect.bisect_left(lengths, len(ending))
    window = endings[max(0, middle - NEAREST - 1) : middle + NEAREST + 1]
    others = [other for other in window if other != ending]
    return sorted(others, key=lambda other: abs(len(other) - len(ending)))[:NEAREST]


def continuation_items(text: str, seed: int = SEED, max_items: int = MAX_ITEMS) -> list[dict]:
    """Items `{"context", "choices", "label"}`: `choices[label]` ends the context's sentence, the
    other choices end other sentences, all distinct; at most `max_items`, shuffled by `seed`."""
    cut: dict[str, str] = {}  # context -> ending; a context seen before is left out: two answers would fit it
    for lead, sentence in passages(text):
        words = sentence.split()
        cut.setdefault(f"{lead} {' '.join(words[:-ENDING_WORDS])}".strip(), " ".join(words[-ENDING_WORDS:]))
    endings = sorted(set(cut.values()), key=lambda ending: (len(ending), ending))
    if len(endings) < CHOICES:
        return []
    lengths = [len(ending) for ending in endings]
    rng = random.Random(seed)
    items = []
    for context, ending in cut.items():
        choices = [ending, *rng.sample(_nearest_in_length(endings, lengths, ending), CHOICES - 1)]
        rng.shuffle(choices)
        items.append({"context": context, "choices": choices, "label": choices.index(ending)})
    rng.shuffle(items)
    return items[:max_items]


def write_task(items: Sequence[dict], directory: Path) -> Path:
    """Write the items and the task YAML that reads them into `directory`; returns the YAML's path.
    The task's `datasets` cache goes there too, not into the user's cache."""
    data = directory / f"{TASK}.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    config = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(directory / "datasets")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    path = directory / f"{TASK}.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
    return path
