"""A study's records as export reads them: its trials in Optuna's storage, the resolved config on
its MLflow parent run, and a trial's sample replayed from the parameters Optuna kept.

Reading creates nothing: a store whose file is missing is refused before it is opened (Optuna's
and MLflow's clients would create an empty one).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from autoprune.components import Direction
from autoprune.constraints import is_feasible, violations_of
from autoprune.errors import ConfigError
from autoprune.search import BASELINE_ATTR, OBJECTIVES_ATTR, RUN_ID_ATTR, Baseline
from autoprune.space import SearchSpace
from autoprune.storage import SQLITE, open_storage, storage_file
from autoprune.tracking import ROLE, STUDY

CONFIG_ARTIFACT = "config.yaml"  # the resolved config every opening of a study logs on its parent run
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as Optuna recorded it."""

    number: int
    state: str  # COMPLETE, FAIL, RUNNING, WAITING, PRUNED
    values: dict[str, float]  # objective -> value; empty unless complete
    params: dict[str, Any]  # flat `compressor.param[.layer]` values
    baseline: dict[str, Any] | None  # the BASELINE_ATTR user attribute of a baseline trial
    run_id: str | None  # its MLflow child run
    feasible: bool = True  # within the study's constraints (see autoprune.constraints)

    @property
    def baseline_name(self) -> str | None:
        return self.baseline["name"] if self.baseline else None

    def as_baseline(self) -> list[Baseline]:
        """The trial's own baseline, for preparing the compressors as the study did (none for sampled trials)."""
        if not self.baseline:
            return []
        return [Baseline(self.baseline["name"], self.baseline.get("params", {}), self.baseline["overrides"])]


@dataclass(frozen=True)
class StudyRecords:
    name: str
    objectives: list[str]
    directions: list[Direction]
    trials: dict[int, TrialRecord]

    def complete(self, feasible_only: bool = False) -> dict[int, list[float]]:
        """Objective values of the completed trials (`feasible_only`: those within the study's
        constraints), by number, in the order of `objectives`."""
        return {
            number: [trial.values[name] for name in self.objectives]
            for number, trial in self.trials.items()
            if trial.state == "COMPLETE" and (trial.feasible or not feasible_only)
        }


def _store_is_missing(uri: str) -> bool:
    path = storage_file(uri)
    return path is not None and not path.is_file()


def read_study(storage: str, name: str) -> StudyRecords:
    """Every trial of the study `name` in `storage`; refuses a missing store or study."""
    if _store_is_missing(storage):
        raise ConfigError(
            f"study.storage={storage} has no file, so no study; pass the storage the study ran with, "
            "e.g. study.storage=sqlite:///autoprune.db"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = open_storage(storage)
    try:
        study = optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        names = ", ".join(sorted(optuna.get_all_study_names(opened))) or "none"
        raise ConfigError(f"unknown study.name={name} in {storage}; its studies: {names}") from None
    objectives = list(study.user_attrs.get(OBJECTIVES_ATTR, []))
    trials = {
        t.number: TrialRecord(
            t.number,
            t.state.name,
            dict(zip(objectives, t.values)) if t.values else {},
            dict(t.params),
            t.user_attrs.get(BASELINE_ATTR),
            t.user_attrs.get(RUN_ID_ATTR),
            is_feasible(violations_of(t)),
        )
        for t in study.get_trials(deepcopy=False)
    }
    return StudyRecords(name, objectives, [d.name.lower() for d in study.directions], trials)  # type: ignore[misc]


def _tracking_client(tracking_uri: str) -> MlflowClient:
    local = None
    if tracking_uri.startswith(SQLITE):
        local = storage_file(tracking_uri)
    elif "://" not in tracking_uri:
        local = Path(tracking_uri.removeprefix("file:"))
    if local is not None and not local.exists():
        raise ConfigError(
            f"mlflow.tracking_uri={tracking_uri} holds no MLflow store; pass the tracking store the study ran "
            "with, e.g. mlflow.tracking_uri=sqlite:///mlflow.db"
        )
    return MlflowClient(tracking_uri=tracking_uri)


@contextmanager
def _no_download_bar() -> Iterator[None]:
    """MLflow draws a bar on stderr for every download, even of one small file."""
    previous = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[_PROGRESS_BAR]
        else:
            os.environ[_PROGRESS_BAR] = previous


def study_config(tracking_uri: str, experiment: str, name: str) -> dict[str, Any]:
    """The resolved config the study ran with, from its MLflow parent run's `config.yaml`."""
    client = _tracking_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"mlflow.experiment={experiment} is not in {tracking_uri}; pass the study's experiment")
    parents = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{ROLE}` = 'study' and tags.`{STUDY}` = '{name}'", max_results=1
    )
    if not parents:
        raise ConfigError(
            f"study {name} has no MLflow parent run in {tracking_uri} (experiment {experiment}); export reads "
            "the study's config from it: pass the study's mlflow.tracking_uri"
        )
    with tempfile.TemporaryDirectory(prefix="autoprune-export-") as scratch, _no_download_bar():
        try:
            path = client.download_artifacts(parents[0].info.run_id, CONFIG_ARTIFACT, scratch)
        except (MlflowException, OSError) as error:
            raise ConfigError(f"study {name}'s parent run has no readable {CONFIG_ARTIFACT} ({error})") from None
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ConfigError(f"study {name}'s {CONFIG_ARTIFACT} does not hold a mapping")
    return config


class _Replay:
    """A `Suggester` that answers with a finished trial's recorded values."""

    def __init__(self, number: int, params: Mapping[str, Any]):
        self.number, self.params = number, params

    def _value(self, name: str) -> Any:
        if name not in self.params:
            raise ConfigError(
                f"trial {self.number} has no value for {name}: the study's space changed after it ran; "
                "export another trial"
            )
        return self.params[name]

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._value(name)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False):
        return self._value(name)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._value(name)


def _family_lengths(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, int]:
    """Each compressor's per-layer family length, as many values as the trial recorded."""
    lengths = {}
    for compressor, parameters in space.sections.items():
        indices = [
            int(match.group(1))
            for parameter in parameters
            if parameter.per_layer
            for key in params
            if (match := re.fullmatch(re.escape(parameter.key) + r"\.(\d+)", key))
        ]
        lengths[compressor] = max(indices, default=-1) + 1
    return lengths


def trial_sample(space: SearchSpace, trial: TrialRecord) -> dict[str, dict[str, Any]]:
    """The per-compressor sample the trial ran, replayed from its parameters (a baseline's
    overrides applied, as when it was claimed)."""
    overrides = trial.baseline["overrides"] if trial.baseline else None
    return space.sample(_Replay(trial.number, trial.params), _family_lengths(space, trial.params), overrides)
