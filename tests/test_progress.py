"""Progress bars: counted bars on a terminal's stderr for long work, erased when done; nothing
for short steps, with `progress=false`, or when stderr is not a terminal; stdout untouched."""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import struct
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from autoprune.calibration import collect_stats
from autoprune.progress import DELAY_VARIABLE, progress, set_progress
from autoprune.trial import run_trial


class Screen:
    """What was written to a stream, as the bytes read from its other end."""

    def __init__(self, reading_end: int):
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, args=(reading_end,))
        self._reader.start()

    def _read(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a terminal's other end once the last writer has closed
                break
            if not chunk:
                break
            self._chunks.append(chunk)
        os.close(fd)

    def close(self) -> None:
        self._reader.join()
        self.text = b"".join(self._chunks).decode()


@contextmanager
def stderr_to(reading_end: int, writing_end: int) -> Iterator[Screen]:
    screen = Screen(reading_end)
    stream = os.fdopen(writing_end, "w")
    saved, sys.stderr = sys.stderr, stream
    try:
        yield screen
    finally:
        sys.stderr = saved
        stream.close()
        screen.close()


def terminal() -> tuple[int, int]:
    """A pseudo-terminal of 24 rows and 100 columns: (the terminal's end, the program's end)."""
    terminal_end, program_end = os.openpty()
    fcntl.ioctl(program_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    return terminal_end, program_end


def last_drawn(text: str) -> str:
    """What the line holds after the last carriage return that was followed by something."""
    return [part for part in text.split("\r") if part][-1]


@pytest.fixture
def no_delay(monkeypatch):
    monkeypatch.setenv(DELAY_VARIABLE, "0")


def test_long_work_shows_counted_bars_on_the_terminal_and_erases_them(tiny_context, no_delay, capfd):
    model, layout, windows = tiny_context.model, tiny_context.layout, tiny_context.calibration[:8]
    registry = tiny_context.registry
    sequential = dataclasses.replace(tiny_context, calibration=windows[:4], calibration_mode="sequential", cache={})
    with stderr_to(*terminal()) as screen:
        collect_stats(model, layout, windows, {"sum_sq"}, batch_size=2)
        params = {"prune": {"metric": "wanda", "sparsity": 0.5}}
        run_trial(sequential, [registry.compressor("prune")], [registry.scorer("perplexity")], params)
    assert re.search(r"calibration statistics: +\d+%\|.*\| [0-4]/4 \[\d\d:\d\d<.*batch/s\]", screen.text)
    assert re.search(r"pruning \(wanda\): +\d+%\|.*\| [0-6]/6 \[.*block/s\]", screen.text)
    assert re.search(r"perplexity: +\d+%\|.*\| \d+/\d+ \[", screen.text)
    assert last_drawn(screen.text).strip() == ""  # the last bar erased itself
    assert capfd.readouterr().out == ""


def test_the_clock_moves_while_one_long_item_runs(monkeypatch):
    monkeypatch.setenv(DELAY_VARIABLE, "0.1")
    with stderr_to(*terminal()) as screen:
        for _ in progress(["one block"], "pruning", unit="block"):
            time.sleep(1.3)
    assert re.search(r"pruning: +0%\|.*\| 0/1 \[00:00<", screen.text)  # shown before the item is done
    assert re.search(r"pruning: +0%\|.*\| 0/1 \[00:01<", screen.text)  # and redrawn as time passes


def test_nested_bars_put_the_cursor_back_and_erase_everything(no_delay):
    with stderr_to(*terminal()) as screen:
        for _ in progress(range(2), "trials"):
            for _ in progress(range(3), "blocks"):
                time.sleep(0.05)
    assert "trials:" in screen.text and "blocks:" in screen.text
    assert screen.text.count("\n") == screen.text.count("\x1b[A")  # every line down is gone back up
    assert last_drawn(screen.text).strip() == ""


def test_a_log_line_erases_the_bars_before_it_is_written(no_delay):
    terminal_end, program_end = terminal()
    with stderr_to(terminal_end, program_end) as screen:
        handler = logging.StreamHandler(sys.stderr)  # stdout and stderr on one terminal, as a user runs it
        log = logging.getLogger("autoprune")
        log.addHandler(handler)
        try:
            for index in progress(range(2), "pruning"):
                time.sleep(0.1)
                if index == 0:
                    log.warning("trial 3 failed")
        finally:
            log.removeHandler(handler)
    before, after = screen.text.split("trial 3 failed")
    assert "pruning:" in before and last_drawn(before).strip() == ""  # the line starts clean
    assert last_drawn(screen.text).strip() == ""


def test_a_short_step_prints_nothing(monkeypatch):
    monkeypatch.delenv(DELAY_VARIABLE, raising=False)  # the default delay, 2 s
    with stderr_to(*terminal()) as screen:
        assert sum(progress(range(1000), "counting")) == 499500
    assert screen.text == ""


def test_progress_false_or_stderr_not_a_terminal_prints_nothing(tiny_context, no_delay):
    model, layout, windows = tiny_context.model, tiny_context.layout, tiny_context.calibration[:2]
    set_progress(False)
    try:
        with stderr_to(*terminal()) as off:
            collect_stats(model, layout, windows, {"sum_sq"}, batch_size=1)
    finally:
        set_progress(True)
    with stderr_to(*os.pipe()) as piped:
        collect_stats(model, layout, windows, {"sum_sq"}, batch_size=1)
    assert off.text == "" and piped.text == ""
