"""Progress bars for long work (calibration, pruning block by block, evaluation, timing, export).

On stderr, only when it is a terminal and the config's `progress` is on, and only for a step that
is still running after `DELAY_S`: short steps print nothing extra.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
DELAY_S = 2.0
_enabled = True


def set_progress(enabled: bool) -> None:
    """The config's `progress` key: False turns every bar off for this process."""
    global _enabled
    _enabled = enabled


def shown() -> bool:
    return _enabled and sys.stderr.isatty()


def progress(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, with a bar counting them (count, rate, time left) while the step runs."""
    if not shown():
        yield from items
        return
    with tqdm(items, desc=description, total=total, unit=unit, file=sys.stderr, delay=DELAY_S, leave=False) as bar:
        yield from bar
