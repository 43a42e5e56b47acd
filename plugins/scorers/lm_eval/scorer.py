"""Zero-shot accuracy through lm-evaluation-harness: objective `accuracy`, the mean over the tasks.

Settings (`scoring.lm_eval`): `tasks`, the harness's task names (default: the project's own
`autoprune_continuation`, built from the study's evaluation text, see `continuation.py`; hub tasks
such as hellaswag or arc_easy where a hub is reachable); `limit`, the examples evaluated per task
(the first ones: the local task's are shuffled already); `batch_size`, sequences per forward pass.
Each task's accuracy is logged beside the objective as `lm_eval.acc.<task>`, and the dense
model's once per study as `dense.accuracy` and `dense.acc.<task>`.

The model is evaluated as the trial left it, in process: the harness calls the model itself, so
an attention function a compressor installed (`context.runtime`) runs too.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoprune.plugin import ConfigError, Scorer, StudyContext
from autoprune_plugins.scorers.lm_eval.continuation import TASK, continuation_items, write_task
from autoprune_plugins.scorers.lm_eval.harness import accuracies, check_harness_tasks, require_harness

LOCAL_TASKS = (TASK,)
TASK_FILES = "lm_eval.task_files"  # context.cache key: local task name -> its YAML


def _whole(key: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key} is {value!r}; use a whole number from {low} to {high}")


def _task_names(tasks: Any) -> list[str]:
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks:
        raise ConfigError(f"tasks is {tasks!r}; list one or more lm-eval task names, e.g. [{TASK}]")
    for name in tasks:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"tasks holds {name!r}; each task is an lm-eval task name such as {TASK} or arc_easy")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"tasks is {list(tasks)}, which names a task twice; list each task once")
    return list(tasks)


def _scratch_directory() -> Path:
    """Where this process writes the local task's files: removed when it exits, never the cwd."""
    directory = Path(tempfile.mkdtemp(prefix="autoprune-lm-eval-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


class LmEval(Scorer):
    name = "lm_eval"
    objectives = {"accuracy": "maximize"}
    params = {"tasks": [TASK], "limit": 100, "batch_size": 32}

    def check(self, section: Mapping[str, Any]) -> None:
        _task_names(section.get("tasks", self.params["tasks"]))
        _whole("limit", section.get("limit", self.params["limit"]), 1, 1 << 30)
        _whole("batch_size", section.get("batch_size", self.params["batch_size"]), 1, 1 << 16)

    def bind(self, section: Mapping[str, Any]) -> Scorer:
        """Selected in a study: the harness must be installed and know the tasks, before any compute."""
        bound = super().bind(section)
        require_harness()
        harness_tasks = [name for name in _task_names(bound.settings["tasks"]) if name not in LOCAL_TASKS]
        if harness_tasks:
            check_harness_tasks(harness_tasks)
        return bound

    def local_tasks(self, context: StudyContext) -> dict[str, Path]:
        """The project's own tasks, built once per study from its evaluation text."""
        if TASK_FILES not in context.cache:
            text = context.tokenizer.decode(context.evaluation.flatten().tolist(), skip_special_tokens=True)
            items = continuation_items(text)
            if not items:
                raise ConfigError(
                    f"scoring.lm_eval: the evaluation text has too few sentences of prose for the {TASK} task; "
                    "evaluate on more text (data.eval_windows=null) or name other tasks"
                )
            context.cache[TASK_FILES] = {TASK: write_task(items, _scratch_directory())}
        return context.cache[TASK_FILES]

    def measure(self, context: StudyContext) -> dict[str, float]:
        tasks = self.settings["tasks"]
        found = accuracies(
            context.model,
            context.tokenizer,
            tasks,
            self.local_tasks(context) if set(tasks) & set(LOCAL_TASKS) else {},
            self.settings["limit"],
            self.settings["batch_size"],
        )
        missing = [name for name in tasks if name not in found]
        if missing:
            raise ValueError(f"lm-eval reported no accuracy for {missing}; name tasks with an acc metric")
        return {"accuracy": sum(found[name] for name in tasks) / len(tasks)} | {
            f"acc.{name}": value for name, value in found.items()
        }

    def prepare(self, context: StudyContext) -> dict[str, float]:
        return self.measure(context)

    def score(self, context: StudyContext) -> dict[str, float]:
        return self.measure(context)
