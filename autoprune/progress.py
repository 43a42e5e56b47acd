"""Progress bars for long work (calibration, pruning block by block, evaluation, timing, export).

A bar goes to stderr, only when stderr is a terminal and the config's `progress` is on, and only
for a step still running after the delay: `DELAY_S`, or the environment's
`AUTOPRUNE_PROGRESS_DELAY` in seconds. Short steps print nothing extra, and stdout (the study's
line per trial) never gets a byte. Once shown, a bar counts its items with their rate and the
time left, and is redrawn every `REDRAW_S` so that its clock moves while one long item runs (a
block of a 1.3B model can take minutes on a CPU). It erases itself when the step ends, so bars
one after another, or one inside another, leave no lines behind.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
DELAY_S = 2.0
DELAY_VARIABLE = "AUTOPRUNE_PROGRESS_DELAY"
REDRAW_S = 1.0
_enabled = True


def set_progress(enabled: bool) -> None:
    """The config's `progress` key: False turns every bar off for this process."""
    global _enabled
    _enabled = enabled


def shown() -> bool:
    return _enabled and sys.stderr.isatty()


def delay_s() -> float:
    """`AUTOPRUNE_PROGRESS_DELAY` when it is a number of seconds >= 0, else `DELAY_S`."""
    try:
        delay = float(os.environ.get(DELAY_VARIABLE, DELAY_S))
    except ValueError:
        return DELAY_S
    return delay if math.isfinite(delay) and delay >= 0 else DELAY_S


class _Bar:
    """A tqdm bar that a clock thread draws once the delay has passed, even before the first item
    is done, and redraws every `REDRAW_S`; items are counted under the same lock."""

    def __init__(self, description: str, total: int | None, unit: str):
        delay = delay_s()
        self._bar = tqdm(
            total=total, desc=description, unit=unit, file=sys.stderr, delay=delay, leave=False, dynamic_ncols=True
        )
        self._lock = threading.Lock()
        self._drawn = False
        self._finished = threading.Event()
        self._clock = threading.Thread(target=self._redraw, args=(delay,), name="autoprune-progress", daemon=True)
        self._clock.start()

    def _redraw(self, delay: float) -> None:
        wait = delay
        while not self._finished.wait(wait):
            with self._lock:
                self._bar.refresh()
                self._drawn = True
            wait = REDRAW_S

    def advance(self) -> None:
        with self._lock:
            self._bar.update()

    def close(self) -> None:
        self._finished.set()
        self._clock.join()
        if self._drawn:
            self._bar.clear()  # tqdm erases only the bars it drew itself
        self._bar.close()


def progress(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, with a bar counting them (count, rate, time left) while the step runs; `total`
    defaults to `len(items)` when they have one."""
    if not shown():
        yield from items
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    bar = _Bar(description, total, unit)
    try:
        for item in items:
            yield item
            bar.advance()
    finally:
        bar.close()
