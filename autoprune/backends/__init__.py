"""Backends: what runs a study's trials once the study is open.

The study (`autoprune.study`) validates, opens the Optuna study, builds the context, opens the
MLflow parent run and reports the front; in between it hands a backend a `StudyRun`
(`autoprune.backends.study_run`), which holds the plan, the search and the tracker and takes every
trial through the same records in the same order (claimed, child run, run linked, told, closed), so
that a kill between any two is repaired by the next run whatever ran the trial. A backend decides
only where trials run and how many at once:

    local   this process, one trial after another (`autoprune.backends.local`)
    ray     Ray Tune workers, several at once, on this machine or a cluster (`autoprune.backends.ray_tune`)

`search.backend=<name>` picks one. Another package adds a backend by subclassing `Backend` and
naming it in its entry points (the class is imported only when a study selects it):

    [project.entry-points."autoprune.backends"]
    slurm = "my_package.slurm:SlurmBackend"

Its `check` runs with the other checks, before anything loads; its `run` must leave every trial it
claimed told (COMPLETE or FAIL) or, when it is interrupted, failed through `StudyRun.abandon_trial`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from autoprune.errors import ConfigError
from autoprune.validation import Rule, show

if TYPE_CHECKING:
    from autoprune.backends.study_run import StudyRun
    from autoprune.config import AutopruneConfig

ENTRY_POINT_GROUP = "autoprune.backends"
BUILT_IN = {
    "local": "autoprune.backends.local:LocalBackend",
    "ray": "autoprune.backends.ray_tune:RayTuneBackend",
}


class Backend(ABC):
    """Runs the claimed trials of one opening of a study until it has `search.n_trials` completed
    trials or this run has failed `search.max_failures` of them."""

    name: ClassVar[str]

    def check(self, config: AutopruneConfig, probe: bool) -> None:  # noqa: B027 (optional: most check nothing)
        """Refuse settings this backend cannot run (`ConfigError`, one line with the fix); called
        before anything loads. `probe`: also look at the machine and the servers the settings
        name (False where a worker rebuilds a plan its driver checked). Nothing by default."""

    @abstractmethod
    def run(self, study: StudyRun) -> None:
        """Run trials through `study` (claim, open, complete or fail each) until it is done."""


def backend_targets() -> dict[str, str]:
    """Every backend by name, as `module:Class`: the built-ins, then the installed packages' (a
    package cannot replace a built-in)."""
    found = {entry.name: entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BUILT_IN}


def load_backend(name: str) -> Backend:
    """The backend called `name`, imported now; `ConfigError` when it is unknown or will not import."""
    targets = backend_targets()
    if name not in targets:
        raise ConfigError(_unknown("search.backend", name, targets))
    module_name, _, class_name = targets[name].partition(":")
    try:
        backend = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"search.backend={name}: {targets[name]} failed to import ({type(error).__name__}: {error}); "
            "fix or reinstall the package that provides it"
        ) from None
    return backend()


def _unknown(key: str, value: Any, targets: dict[str, str]) -> str:
    return f"unknown {key} {show(value)}; known backends: {', '.join(sorted(targets))}"


class KnownBackend(Rule):
    """The name of a built-in or installed backend."""

    def problem(self, key: str, value: Any) -> str | None:
        targets = backend_targets()
        return None if value in targets else _unknown(key, value, targets)
