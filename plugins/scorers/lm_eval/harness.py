"""lm-evaluation-harness run in process on the model as the trial left it: no reload, no copy.

The harness is an optional extra, imported only here and only when the scorer is selected, so
the plugin loads without it. Its `evaluate` is called rather than `simple_evaluate`, which would
also reseed the process's global random generators, ask the hub for the model's commit and run
`git` in the working directory on every trial. Its loggers and progress bars are silenced while
it runs: a study's output stays the study's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from torch import nn

from autoprune.plugin import ConfigError

INSTALL = "pip install 'autoprune[eval]'"
METRIC = "acc,none"  # how the harness keys the accuracy under the default filter
_LOGGERS = ("lm_eval", "datasets", "accelerate", "peft")


def require_harness() -> None:
    """Refuse the scorer before any compute when the `eval` extra is not installed."""
    try:
        importlib.import_module("lm_eval.models.huggingface")
    except ImportError as error:
        raise ConfigError(
            f"scoring.lm_eval needs lm-evaluation-harness, which is not installed ({error}); "
            f"install autoprune[eval]: {INSTALL}"
        ) from None


@functools.cache
def task_manager(with_harness_tasks: bool) -> Any:
    """The harness's index of tasks, built once per process: its own tasks (hellaswag, arc_easy, ...)
    take seconds to index, so only when a study names one."""
    from lm_eval.tasks import TaskManager

    with quiet():
        return TaskManager(include_defaults=with_harness_tasks)


def _metrics(entry: Any) -> set[str]:
    """The metrics a task (or the aggregate metrics a group) of the harness's index reports."""
    config = entry.cfg or {}
    listed = config.get("metric_list") or config.get("aggregate_metric_list") or []
    metrics = {item.get("metric") for item in listed if isinstance(item, Mapping)}
    if not listed and config.get("output_type") == "multiple_choice":
        metrics = {"acc", "acc_norm"}
    return metrics


def check_harness_tasks(names: Sequence[str]) -> None:
    """Refuse a name the harness does not know, a tag (it has no accuracy of its own) and a task
    without an accuracy metric, before any compute."""
    index = task_manager(True).task_index
    for name in names:
        entry = index.get(name)
        if entry is None:
            guess = get_close_matches(name, list(index), n=1)
            near = f"did you mean {guess[0]}? " if guess else ""
            raise ConfigError(
                f"scoring.lm_eval.tasks: lm-eval has no task {name!r}; {near}list them with `lm-eval ls tasks`"
            )
        if entry.kind.name == "TAG":
            members = ", ".join(sorted(entry.tags)[:5])
            raise ConfigError(
                f"scoring.lm_eval.tasks: {name!r} is a tag of lm-eval tasks, which has no accuracy of its own; "
                f"name its tasks instead (e.g. {members})"
            )
        if entry.kind.name != "PY_TASK" and "acc" not in _metrics(entry):  # a Python task: told when it runs
            raise ConfigError(
                f"scoring.lm_eval.tasks: lm-eval task {name!r} reports no accuracy (acc); "
                "choose a multiple-choice task such as arc_easy or hellaswag"
            )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The harness's and its libraries' log records below errors dropped, and what they print on
    stderr (progress bars, warnings) swallowed."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """No network while the project's own tasks load: `datasets` would otherwise ask the hub to
    count a load of its `json` builder (waiting up to seconds where the hub is unreachable)."""
    from datasets import config

    saved = config.HF_HUB_OFFLINE, config.HF_UPDATE_DOWNLOAD_COUNTS
    config.HF_HUB_OFFLINE, config.HF_UPDATE_DOWNLOAD_COUNTS = True, False
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE, config.HF_UPDATE_DOWNLOAD_COUNTS = saved


def accuracies(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[str],
    local_tasks: Mapping[str, Path],
    limit: int,
    batch_size: int,
) -> dict[str, float]:
    """The accuracy of `model` on each task the harness reports one for (the named tasks, and the
    tasks of a named group), on the first `limit` examples of each, zero-shot. `local_tasks` maps
    the project's own task names to their YAML files."""
    from lm_eval import evaluate
    from lm_eval.models.huggingface import HFLM

    harness_tasks = [name for name in tasks if name not in local_tasks]
    manager = task_manager(bool(harness_tasks))
    with quiet():
        with offline():
            local = [str(local_tasks[name]) for name in tasks if name in local_tasks]
            built = list(manager.load(local)["tasks"].values()) if local else []
        try:
            loaded = manager.load([*built, *harness_tasks])
        except Exception as error:  # datasets raises many types for an unreachable hub
            raise ConfigError(
                f"scoring.lm_eval.tasks: could not load the data of {', '.join(harness_tasks)} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "without a hub, evaluate on the project's own task (scoring.lm_eval.tasks=[autoprune_continuation])"
            ) from error
        for task in loaded["tasks"].values():
            task.set_config(key="num_fewshot", value=0)
        harness_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = evaluate(lm=harness_model, task_dict=loaded, limit=limit, bootstrap_iters=0, log_samples=False)
    return {name: float(metrics[METRIC]) for name, metrics in results["results"].items() if METRIC in metrics}
