"""`autoprune.cli.main` run in process, in a fresh directory, with the model loader replaced.

The validation tests and the fuzz test call the command as a user would, but in process (a
subprocess per input would cost seconds of imports): the directory is the run's working
directory, HOME and XDG_CACHE_HOME, so anything the run writes shows up in `Outcome.created`,
and the model loader raises `ReachedCompute` instead of loading anything.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import autoprune.study
from autoprune.cli import main


class ReachedCompute(Exception):
    """Raised where the model would load (or, with `stop_after_checks`, right after the plan is
    checked): every check passed. Not an AutopruneError, so `main` does not catch it."""


@dataclass
class Outcome:
    code: int | None  # main's exit code; None when the run reached compute
    stdout: str
    stderr: str
    created: list[str]  # paths (relative to the run's directory) the run left behind


def _reached(*args, **kwargs):
    raise ReachedCompute


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def run_cli(args: Sequence[str], directory: Path, stop_after_checks: bool = False) -> Outcome:
    """Run `autoprune ARGS` in `directory`. With `stop_after_checks`, stop as soon as the study's
    plan has passed every check (before the Optuna storage is opened), which is faster."""
    real_prepare = autoprune.study.prepare

    def prepare_then_stop(*args, **kwargs):
        real_prepare(*args, **kwargs)
        raise ReachedCompute

    before = set(directory.rglob("*"))
    out, err = io.StringIO(), io.StringIO()
    environment = {"HOME": str(directory), "XDG_CACHE_HOME": str(directory / ".cache")}
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, environment))
        stack.enter_context(_inside(directory))
        stack.enter_context(mock.patch("autoprune.builder.load_model", _reached))
        stack.enter_context(mock.patch("autoprune.model.load_model", _reached))
        if stop_after_checks:
            stack.enter_context(mock.patch("autoprune.study.prepare", prepare_then_stop))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            code: int | None = main(list(args))
        except ReachedCompute:
            code = None
    created = sorted(str(path.relative_to(directory)) for path in set(directory.rglob("*")) - before)
    return Outcome(code, out.getvalue(), err.getvalue(), created)
