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
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from optuna.trial import FrozenTrial, TrialState

from autoprune.components import Direction
from autoprune.report import layers_figure, pareto_figure
from autoprune.search import LAYERS_ATTR, RUN_ID_ATTR
from autoprune.steps import reached
from autoprune.storage import SQLITE, file_lock, storage_file

log = logging.getLogger("autoprune")
ROLE, STUDY, TRIAL = "autoprune.role", "autoprune.study", "autoprune.trial"
ERROR_TAG_CHARS = 4000  # the end of the exception's message fits an MLflow tag


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

    def start_study(self, config_yaml: str, space: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Create the parent run, or reopen the one an earlier run (or another process) of this
        study created; callers hold the study lock, so a study has one parent run."""
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
        self.client.log_batch(self.parent_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
        self.client.log_text(self.parent_id, config_yaml, "config.yaml")
        self.client.log_dict(self.parent_id, dict(space), "search_space.json")

    def log_study_metrics(self, metrics: Mapping[str, float]) -> None:
        """Figures of the whole study (the dense model's, measured by the scorers) on the parent run."""
        if metrics:
            timestamp = _now_ms()
            self.client.log_batch(
                self.parent_id, metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
            )

    def start_trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:03d}",
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_id,
                MLFLOW_RUN_NAME: f"trial-{number:03d}",
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
    ) -> None:
        """Close a trial's run; its per-layer lists (units, ratios, ...) become one table per
        compressor. A failed trial's `error` becomes the `error` tag (the exception itself, what
        the run page shows) and `error.txt` (the whole traceback). `again`: a killed run may have
        written some of it already."""
        for compressor, table in per_compressor_tables(layers or {}).items():
            if again:
                self._remove_artifact(run_id, f"{compressor}_layers.json")
            self._log_table(run_id, table, f"{compressor}_layers.json")
        tags = [RunTag("state", state)]
        if error is not None:
            self.client.log_text(run_id, "".join(traceback.format_exception(error)), "error.txt")
            exception = "".join(traceback.format_exception_only(error)).strip()
            tags.append(RunTag("error", exception[-ERROR_TAG_CHARS:]))
        timestamp = _now_ms()
        self.client.log_batch(
            run_id,
            metrics=[Metric(key, float(value), timestamp, 0) for key, value in (metrics or {}).items()],
            tags=tags,
        )
        self.client.set_terminated(run_id, status="FINISHED" if state == "COMPLETE" else "FAILED")

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
                )
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
            self.client.set_tag(run_id, "state", "FAIL")
            self.client.set_terminated(run_id, status="KILLED")

    def finish_study(
        self,
        rows: Sequence[Mapping[str, Any]],
        front: Sequence[int],
        objectives: Sequence[str],
        directions: Sequence[Direction],
        run_ids: Mapping[int, str],
        layers: Mapping[int, Mapping[str, list[Any]]],
        status: str = "FINISHED",
    ) -> None:
        """Pareto table, plots (objectives; per-layer values such as the sparsity ratios of the
        Pareto trials) and tags; summary metrics on the parent; close the parent run."""
        on_front = set(front)
        for number, run_id in run_ids.items():
            with _unless_run_is_gone():
                self.client.set_tag(run_id, "is_pareto", "true" if number in on_front else "false")
        front_rows = [row for row in rows if row["trial"] in on_front]
        if front_rows:
            columns = list(dict.fromkeys(key for row in front_rows for key in row))  # a resumed study may add keys
            table = {column: [row.get(column) for row in front_rows] for column in columns}
            self._remove_artifact(self.parent_id, "pareto.json")  # log_table appends to an existing table
            self._log_table(self.parent_id, table, "pareto.json")
            reached("study.reporting")
            self._log_figure(pareto_figure(rows, front, objectives, directions, title=self.study_name), "pareto.png")
            front_layers = {number: layers[number] for number in front if layers.get(number)}
            if front_layers:
                self._log_figure(layers_figure(front_layers, title=self.study_name), "pareto_layers.png")
        timestamp = _now_ms()
        summary = {"n_complete": len(rows), "pareto_size": len(front_rows)}
        for objective, direction in zip(objectives, directions):
            values = [row[objective] for row in rows]
            if values:
                summary[f"best_{objective}"] = min(values) if direction == "minimize" else max(values)
        self.client.log_batch(
            self.parent_id, metrics=[Metric(key, float(value), timestamp, 0) for key, value in summary.items()]
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
