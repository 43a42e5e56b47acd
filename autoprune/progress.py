"""Progress bars for long work (calibration, pruning block by block, evaluation, timing, export).

A bar goes to stderr, only when stderr is a terminal and the config's `progress` is on, and only
for a step still running after the delay: `DELAY_S`, or the environment's
`AUTOPRUNE_PROGRESS_DELAY` in seconds. Short steps print nothing extra, and stdout (the study's
line per trial) never gets a byte.

Once the delay has passed a clock thread draws the bar, even before the first item is done, and
redraws it every `REDRAW_S` with the count, the mean rate and the time left, so that it moves
while one long item runs (a block of a 1.3B model can take minutes on a CPU). The bar erases
itself when the step ends, so bars one after another, or one inside another, leave no lines
behind; and while bars are drawn, a line the `autoprune` logger writes (to the same terminal,
as a rule) first erases them, so that it starts on a clean line.
"""

from __future__ import annotations

import logging
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
_terminal = threading.Lock()  # held while anything draws or erases a bar
_drawn: set[tqdm] = set()  # the bars on the terminal now
_log = logging.getLogger("autoprune")


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


def _erase_drawn_bars(record: logging.LogRecord) -> bool:
    """A logging filter: the bars make way for a log line; the clock draws them again after it."""
    with _terminal:
        for bar in _drawn:
            bar.clear()
    return True


class _Bar:
    """tqdm counts the items; the clock thread alone draws (tqdm's own `delay` is infinite)."""

    def __init__(self, description: str, total: int | None, unit: str):
        self._bar = tqdm(
            total=total, desc=description, unit=unit, file=sys.stderr, delay=math.inf, leave=False, dynamic_ncols=True
        )
        self._finished = threading.Event()
        self._clock = threading.Thread(target=self._draw, args=(delay_s(),), name="autoprune-progress", daemon=True)
        self._clock.start()

    def _draw(self, delay: float) -> None:
        wait = delay
        while not self._finished.wait(wait):
            with _terminal:
                if self._finished.is_set():
                    return
                self._bar.refresh()
                _drawn.add(self._bar)
                _log.addFilter(_erase_drawn_bars)
            wait = REDRAW_S

    def advance(self) -> None:
        with _terminal:
            self._bar.update()

    def close(self) -> None:
        self._finished.set()
        self._clock.join()
        with _terminal:
            if self._bar in _drawn:
                self._bar.clear()
                _drawn.discard(self._bar)
            if not _drawn:
                _log.removeFilter(_erase_drawn_bars)
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
