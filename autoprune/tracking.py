"""MLflow records of a study: one parent run, one nested child run per trial, the Pareto front.

Uses `MlflowClient` with batched writes, so tracking stays a small share of a trial's time,
and never the fluent API's global active run, so a study can be resumed into its old parent.
"""

from __future__ import annotations

import logging
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE
from optuna.trial import FrozenTrial, TrialState

from autoprune.components import Direction
from autoprune.constraints import is_feasible, violations_of
from autoprune.plots import layers_figure, pareto_figure, pareto_html, points_of
from autoprune.report import front_rows, front_table
from autoprune.review_links import VIEW_TAG_PREFIX, runs_view_state, view_key
from autoprune.search import LAYERS_ATTR, RUN_ID_ATTR
from autoprune.steps import reached
from autoprune.storage import SQLITE, file_lock, storage_file

log = logging.getLogger("autoprune")
# every tag autoprune writes shares its prefix, so the UI lists them together
ROLE, STUDY, TRIAL = "autoprune.role", "autoprune.study", "autoprune.trial"
STATE, PARETO, ERROR, BASELINE = "autoprune.state", "autoprune.is_pareto", "autoprune.error", "autoprune.baseline"
FEASIBLE = "autoprune.feasible"  # within the study's constraints (only when it has some)
ERROR_TAG_CHARS = 4000  # the end of the exception's message fits an MLflow tag
HYPERVOLUME = "hypervolume"  # the parent's step metric: the front's hypervolume after each completed trial


def _now_ms() -> int:
    return int(time.time() * 1000)


def expand_lists(values: Mapping[str, Any]) -> dict[str, Any]:
    """List values become one key each, `key.<index>`: MLflow params and metrics are scalars."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            flat.update({f"{key}.{i}": item for i, item in enumerate(value)})
        else:
            flat[key] = value
    return flat


def flatten(sample: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Nested per-compressor sample -> flat `compressor.param[.layer]` keys."""
    return expand_lists(
        {f"{compressor}.{name}": value for compressor, values in sample.items() for name, value in values.items()}
    )


def per_compressor_tables(layers: Mapping[str, list[Any]]) -> dict[str, dict[str, list[Any]]]:
    """Group `compressor.key` lists into one table per compressor (its lists share a length)."""
    tables: dict[str, dict[str, list[Any]]] = {}
    for key, values in layers.items():
        compressor, _, column = key.partition(".")
        tables.setdefault(compressor, {})[column] = values
    return tables


@contextmanager
def _unless_run_is_gone():
    """Runs of earlier sessions may have been deleted in the UI; their trials stay in Optuna."""
    try:
        yield
    except MlflowException as error:
        log.warning(f"mlflow: skipped a trial run that is deleted or missing ({str(error).splitlines()[0]})")


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite store (`<dir of mlflow.db>/mlruns`), not in whatever the cwd is."""
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server decides
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.resolve().parent / "mlruns").as_uri()


@dataclass(frozen=True)
class StudyOutcome:
    """What a study's end reports: its completed trials (`rows`: number, objective values, params)
    and their Pareto front, with each trial's run, name and per-layer lists."""

    rows: Sequence[Mapping[str, Any]]
    front: Sequence[int]
    objectives: Sequence[str]
    directions: Sequence[Direction]
    run_ids: Mapping[int, str]
    names: Mapping[int, str]
    layers: Mapping[int, Mapping[str, list[Any]]]
    hypervolume: float


class StudyTracker:
    """Writes one study's runs to an MLflow tracking store."""

    def __init__(self, tracking_uri: str, experiment: str, study_name: str):
        self.study_name = study_name
        # processes starting together must not both create the SQLite schema or the experiment
        with file_lock(storage_file(tracking_uri) if tracking_uri.startswith(SQLITE) else None):
            self.client = MlflowClient(tracking_uri=tracking_uri)  # creates the store's tables
            found = self.client.get_experiment_by_name(experiment)
            if found is not None and found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)  # a study writes into it again
            self.experiment_id = (
                found.experiment_id
                if found
                else self.client.create_experiment(
                    experiment, artifact_location=default_artifact_location(tracking_uri)
                )
            )
        self.parent_id = ""

    def start_study(
        self,
        config_yaml: str,
        space: Mapping[str, Any],
        tags: Mapping[str, str],
        params: Mapping[str, str],
        description: str,
        objectives: Sequence[str],
        directions: Sequence[Direction],
    ) -> None:
        """Create the parent run, or reopen the one an earlier run (or another process) of this
        study created; callers hold the study lock, so a study has one parent run. `params` MLflow
        has not seen on it are logged (a param keeps its first value); the description is rewritten;
        the experiment gets the study's saved runs view (see `autoprune.review_links`)."""
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE}` = 'study' and tags.`{STUDY}` = '{self.study_name}'",
            run_view_type=ViewType.ALL,
            max_results=1,
        )
        if existing:
            self.parent_id = existing[0].info.run_id
            if existing[0].info.lifecycle_stage == "deleted":
                self.client.restore_run(self.parent_id)
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=self.study_name, tags={ROLE: "study", STUDY: self.study_name}
            )
            self.parent_id = run.info.run_id
        logged = self.client.get_run(self.parent_id).data.params
        self.client.log_batch(
            self.parent_id,
            params=[Param(key, value) for key, value in params.items() if key not in logged],
            tags=[RunTag(key, str(value)) for key, value in {**tags, MLFLOW_RUN_NOTE: description}.items()],
        )
        self.client.log_text(self.parent_id, config_yaml, "config.yaml")
        self.client.log_dict(self.parent_id, dict(space), "search_space.json")
        view = runs_view_state(f"tags.`{STUDY}` = '{self.study_name}'", objectives, directions, [PARETO, BASELINE])
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG_PREFIX + view_key(self.study_name), view)

    def log_study_metrics(self, metrics: Mapping[str, float]) -> None:
        """Figures of the whole study (the dense model's, measured by the scorers) on the parent run."""
        if metrics:
            timestamp = _now_ms()
            self.client.log_batch(
                self.parent_id, metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
            )

    def log_hypervolume(self, value: float, completed: int) -> None:
        """The front's hypervolume on the parent, at step `completed` (the study's completed trials)."""
        self.client.log_metric(self.parent_id, HYPERVOLUME, float(value), _now_ms(), completed)

    def start_trial(
        self, number: int, name: str, params: Mapping[str, Any], tags: Mapping[str, str] | None = None
    ) -> str:
        """A trial's child run, named `name` (what the trial is, see `autoprune.review.trial_name`)."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_id,
                MLFLOW_RUN_NAME: name,
                ROLE: "trial",
                STUDY: self.study_name,
                TRIAL: str(number),
                **(tags or {}),
            },
        )
        self.client.log_batch(run.info.run_id, params=[Param(key, str(value)) for key, value in params.items()])
        return run.info.run_id

    def end_trial(
        self,
        run_id: str,
        state: str,
        metrics: Mapping[str, float] | None = None,
        error: BaseException | None = None,
        layers: Mapping[str, list[Any]] | None = None,
        again: bool = False,
        feasible: bool | None = None,
    ) -> None:
        """Close a trial's run; its per-layer lists (units, ratios, ...) become one table per
        compressor. A failed trial's `error` becomes the `autoprune.error` tag (the exception itself,
        what the run page shows) and `error.txt` (the whole traceback). `again`: a killed run may have
        written some of it already. A study with constraints tags a completed trial's run with
        `feasible`; a PRUNED trial (stopped by the multi-fidelity gate) ends FINISHED."""
        for compressor, table in per_compressor_tables(layers or {}).items():
            if again:
                self._remove_artifact(run_id, f"{compressor}_layers.json")
            self._log_table(run_id, table, f"{compressor}_layers.json")
        tags = [RunTag(STATE, state)]
        if feasible is not None:
            tags.append(RunTag(FEASIBLE, str(feasible).lower()))
        if error is not None:
            self.client.log_text(run_id, "".join(traceback.format_exception(error)), "error.txt")
            exception = "".join(traceback.format_exception_only(error)).strip()
            tags.append(RunTag(ERROR, exception[-ERROR_TAG_CHARS:]))
        timestamp = _now_ms()
        self.client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), timestamp, 0) for key, value in (metrics or {}).items()],
            tags=tags,
        )
        self.client.set_terminated(run_id, status="FINISHED" if state in ("COMPLETE", "PRUNED") else "FAILED")

    def reconcile(
        self, trials: Mapping[int, FrozenTrial], objectives: Sequence[str], abandoned: Callable[[FrozenTrial], bool]
    ) -> None:
        """Close the trial runs that dead processes left RUNNING, from Optuna's record (the truth):
        a COMPLETE trial's run is finished with its values, any other is marked killed. Runs of
        trials that live processes are still running are left alone."""
        for run in self._running_trial_runs():
            trial = trials.get(int(run.data.tags.get(TRIAL, -1)))
            if trial is None or trial.state == TrialState.RUNNING or not abandoned(trial):
                continue
            linked = trial.user_attrs.get(RUN_ID_ATTR) == run.info.run_id
            if trial.state == TrialState.COMPLETE and linked:
                self.end_trial(
                    run.info.run_id,
                    "COMPLETE",
                    dict(zip(objectives, trial.values)),
                    None,
                    trial.user_attrs.get(LAYERS_ATTR),
                    again=True,
                    feasible=is_feasible(violations_of(trial)) if trial.constraints else None,
                )
            elif trial.state == TrialState.PRUNED and linked:
                self.end_trial(run.info.run_id, "PRUNED", None, None)
            else:
                self.mark_killed(run.info.run_id)

    def _running_trial_runs(self) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{ROLE}` = 'trial' and tags.`{STUDY}` = '{self.study_name}' and attributes.status = 'RUNNING'"
            ),
            max_results=10_000,
        )

    def mark_killed(self, run_id: str) -> None:
        """A trial an interrupted run left behind: close it so the UI does not show it running."""
        with _unless_run_is_gone():
            self.client.set_tag(run_id, STATE, "FAIL")
            self.client.set_terminated(run_id, status="KILLED")

    def finish_study(self, outcome: StudyOutcome, description: str, status: str = "FINISHED") -> None:
        """The front's tags, table (`pareto.json`, best first), plots (`pareto.png`, `pareto.html`, and
        `pareto_layers.png` of the front's per-layer values); the parent's summary metrics and
        `description`; close the parent run."""
        on_front = set(outcome.front)
        for number, run_id in outcome.run_ids.items():
            with _unless_run_is_gone():
                self.client.set_tag(run_id, PARETO, "true" if number in on_front else "false")
        best_first = front_rows(outcome.rows, outcome.front, outcome.objectives, outcome.directions)
        if best_first:
            table = front_table(best_first, outcome.objectives, outcome.names, outcome.run_ids)
            self._remove_artifact(self.parent_id, "pareto.json")  # log_table appends to an existing table
            self._log_table(self.parent_id, table, "pareto.json")
            reached("study.reporting")
            points = points_of(outcome.rows, outcome.front, outcome.objectives, outcome.names, outcome.run_ids)
            figure = pareto_figure(points, outcome.objectives, outcome.directions, title=self.study_name)
            self._log_figure(figure, "pareto.png")
            html = pareto_html(points, outcome.objectives, outcome.directions, title=self.study_name)
            self.client.log_text(self.parent_id, html, "pareto.html")
            front_layers = {
                row["trial"]: outcome.layers[row["trial"]] for row in best_first if outcome.layers.get(row["trial"])
            }
            if front_layers:
                figure = layers_figure(front_layers, title=self.study_name, names=outcome.names)
                self._log_figure(figure, "pareto_layers.png")
        timestamp = _now_ms()
        summary = {"n_complete": len(outcome.rows), "pareto_size": len(best_first)}
        self.client.log_batch(
            self.parent_id,
            metrics=[
                *(Metric(key, float(value), timestamp, 0) for key, value in summary.items()),
                Metric(HYPERVOLUME, outcome.hypervolume, timestamp, len(outcome.rows)),
            ],
            tags=[RunTag(MLFLOW_RUN_NOTE, description)],
        )
        self.client.set_terminated(self.parent_id, status=status)

    def _remove_artifact(self, run_id: str, name: str) -> None:
        """Remove an artifact an earlier (or killed) write left, so it is rewritten, not appended to."""
        if any(info.path == name for info in self.client.list_artifacts(run_id)):
            get_artifact_repository(self.client.get_run(run_id).info.artifact_uri).delete_artifacts(name)

    def _log_table(self, run_id: str, table: Mapping[str, list[Any]], name: str) -> None:
        with warnings.catch_warnings():  # pandas deprecations raised inside MLflow's table conversion
            warnings.simplefilter("ignore")
            self.client.log_table(run_id, dict(table), name)

    def _log_figure(self, figure, name: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.parent_id, figure, name)
        plt.close(figure)

    def abort_study(self) -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status="KILLED")
