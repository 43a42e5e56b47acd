"""Reviewing a finished study as a person does: through a real `mlflow server` (its REST API, what
the UI reads), in optuna-dashboard's terms (metric names, trial names), and in the pictures."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import optuna
import pytest

from autoprune.config import compose_config
from autoprune.pareto import hypervolume, pareto_front
from autoprune.plots import Point, layers_figure, pareto_figure, place_labels, trial_colors
from autoprune.review import trial_name
from autoprune.review_links import VIEW_TAG_PREFIX, view_key
from autoprune.search import NAME_ATTR, REFERENCE_ATTR
from autoprune.study import run_study
from conftest import study_overrides

STUDY = "review"
BASELINES = ["uniform magnitude 0.5", "uniform wanda 0.5"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small study with two baselines and three sampled trials, and what its end printed."""
    tmp_path = tmp_path_factory.mktemp("review")
    overrides = [
        *study_overrides(tmp_path, name=STUDY, trials=5),
        "baselines.allocations=[uniform]",
        "baselines.sparsities=[0.5]",
    ]
    printed: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: printed.append(record.getMessage())
    logger = logging.getLogger("autoprune")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        result = run_study(compose_config(overrides))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return tmp_path, result, "\n".join(printed)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(finished):
    """`mlflow server` over the study's store, on 127.0.0.1, as a reviewer starts it."""
    tmp_path, *_ = finished
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None:
                    raise AssertionError(f"mlflow server exited: {process.stderr.read().decode()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise AssertionError("mlflow server did not answer within 120 s") from None
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and the worker it started
        process.wait(timeout=30)


def rest(base: str, path: str, **query) -> dict:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(query)}", timeout=30) as answer:
        return json.loads(answer.read())


def search(base: str, experiment_id: str, filter_string: str) -> list[dict]:
    body = json.dumps({"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}).encode()
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read()).get("runs", [])


def tags_of(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


def artifact(base: str, run_id: str, path: str) -> bytes:
    with urllib.request.urlopen(
        f"{base}/get-artifact?{urllib.parse.urlencode({'path': path, 'run_uuid': run_id})}"
    ) as a:
        return a.read()


def test_the_parent_run_reads_well_through_the_server(finished, server):
    _, result, _ = finished
    parent = rest(server, "/api/2.0/mlflow/runs/get", run_id=result.parent_run_id)["run"]
    tags, params = tags_of(parent), {p["key"]: p["value"] for p in parent["data"]["params"]}
    description = tags["mlflow.note.content"]
    assert description.startswith("**Pareto front**") and f"study.name={STUDY} pick=knee" in description
    assert "tags.`autoprune.is_pareto` = 'true'" in description
    assert f"{len(result.front)} of {len(result.rows)} completed trials" in description
    best = min(result.rows, key=lambda row: (row["perplexity"], row["trial"]))
    assert f"lowest perplexity: t{best['trial']:03d}" in description
    assert params["objectives"] == "perplexity (min), size_mb (min)" and params["space.prune.sparsity"]
    assert params["search.sampler"] == "tpe" and params["model"] == "tiny"
    assert all(key.startswith(("autoprune.", "mlflow.")) for key in tags)
    artifacts = {
        a["path"] for a in rest(server, "/api/2.0/mlflow/artifacts/list", run_id=result.parent_run_id)["files"]
    }
    assert {"pareto.json", "pareto.png", "pareto.html", "pareto_layers.png", "config.yaml"} <= artifacts
    assert "plotly" in artifact(server, result.parent_run_id, "pareto.html").decode()


def test_the_pareto_table_is_flat_sorted_and_links_each_run(finished, server):
    _, result, _ = finished
    table = json.loads(artifact(server, result.parent_run_id, "pareto.json"))
    assert not [column for column in table["columns"] if "." in column]  # the UI's table reads dots as paths
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert sorted(row["trial"] for row in rows) == sorted(result.front)
    assert [row["perplexity"] for row in rows] == sorted(row["perplexity"] for row in rows)
    assert {row["prune/metric"] for row in rows} <= {"magnitude", "wanda"}
    for row in rows:
        run = rest(server, "/api/2.0/mlflow/runs/get", run_id=row["run_id"])["run"]
        assert run["info"]["run_name"] == row["name"] and tags_of(run)["autoprune.is_pareto"] == "true"
        assert run["data"]["metrics"] and row["name"].startswith(f"t{row['trial']:03d}")


def test_trial_runs_are_named_after_what_they_tried(finished, server):
    _, result, _ = finished
    experiment = rest(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="autoprune")["experiment"]
    trials = search(
        server, experiment["experiment_id"], f"tags.`autoprune.study` = '{STUDY}' and tags.`autoprune.role` = 'trial'"
    )
    names = {int(tags_of(run)["autoprune.trial"]): run["info"]["run_name"] for run in trials}
    assert [names[0], names[1]] == [f"t000 baseline {BASELINES[0]}", f"t001 baseline {BASELINES[1]}"]
    for row in result.rows[2:]:  # sampled: the metric and sparsity the sampler chose
        assert names[row["trial"]] == f"t{row['trial']:03d} {row['prune.metric']} {row['prune.sparsity']:.2f}"


def test_the_printed_address_opens_the_study_view_with_the_objectives_as_columns(finished, server):
    tmp_path, result, printed = finished
    experiment = rest(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="autoprune")["experiment"]
    key = view_key(STUDY)
    expected = f"http://127.0.0.1:5000/#/experiments/{experiment['experiment_id']}/runs?viewStateShareKey={key}"
    assert expected in printed and "workflowType=machine_learning" in printed
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in printed
    assert f"/runs/{result.parent_run_id}?" in printed
    view = json.loads({t["key"]: t["value"] for t in experiment["tags"]}[VIEW_TAG_PREFIX + key])
    assert view["selectedColumns"][:2] == view["columnOrder"][:2] == ["metrics.`perplexity`", "metrics.`size_mb`"]
    assert view["orderByKey"] == "metrics.`perplexity`" and view["orderByAsc"] is True
    found = search(server, experiment["experiment_id"], view["searchFilter"])  # the filter the UI runs
    assert len(found) == len(result.rows) + 1  # the parent and every trial


def test_the_readme_filter_finds_the_front(finished, server):
    _, result, _ = finished
    experiment_id = rest(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="autoprune")["experiment"][
        "experiment_id"
    ]
    front = search(server, experiment_id, "tags.`autoprune.is_pareto` = 'true'")
    assert sorted(int(tags_of(run)["autoprune.trial"]) for run in front) == sorted(result.front)


def test_hypervolume_is_logged_after_each_completed_trial(finished, server):
    tmp_path, result, _ = finished
    history = rest(
        server, "/api/2.0/mlflow/metrics/get-history", run_id=result.parent_run_id, metric_key="hypervolume"
    )["metrics"]
    by_step = {point["step"]: point["value"] for point in history}
    assert sorted(by_step) == list(range(1, len(result.rows) + 1))
    values = [by_step[step] for step in sorted(by_step)]
    assert values == sorted(values) and values[-1] > 0  # a front only grows
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path}/optuna.db")
    complete = {t.number: t.values for t in study.get_trials() if t.state.name == "COMPLETE"}
    front = [complete[number] for number in pareto_front(complete, ["minimize", "minimize"])]
    reference = study.user_attrs[REFERENCE_ATTR]
    assert values[-1] == pytest.approx(hypervolume(front, reference, ["minimize", "minimize"]))


def test_optuna_dashboard_sees_metric_names_and_trial_names(finished):
    tmp_path, result, _ = finished
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.metric_names == ["perplexity", "size_mb"]
    names = [t.user_attrs[NAME_ATTR] for t in study.get_trials()]
    assert names[:2] == [f"t000 baseline {BASELINES[0]}", f"t001 baseline {BASELINES[1]}"]
    assert all(name.startswith(f"t{number:03d} ") for number, name in enumerate(names))


def test_a_trial_name_summarises_each_family_of_per_layer_values():
    params = {
        "remove_layers.count": 1,
        "prune.metric": "wanda",
        "prune.sparsity": 0.5612,
        **{f"prune.offsets.{i}": 0.01 * i for i in range(3)},
        **{f"kv_cache.key_bits.{i}": bits for i, bits in enumerate([2, 4, 6])},
        **{f"kv_cache.value_bits.{i}": 4 for i in range(3)},
    }
    assert trial_name(13, params) == "t013 count=1 wanda 0.56 key_bits~4 value_bits=4"
    assert trial_name(1, params, "uniform wanda 0.5") == "t001 baseline uniform wanda 0.5"


def _crowded(count: int) -> list[Point]:
    """A front of `count` trials packed close together, every third a baseline, and a dominated trial."""
    front = [
        Point(i, (10.0 + i * 0.05, 20.0 - i * 0.05), f"t{i:03d}", "uniform wanda 0.5" if i % 3 == 0 else None, True)
        for i in range(count)
    ]
    return [*front, Point(count, (30.0, 30.0), f"t{count:03d}", None, False)]


def test_the_pareto_plot_marks_baselines_and_its_labels_never_overlap():
    points = _crowded(24)
    figure = pareto_figure(points, ["perplexity", "size_mb"], ["minimize", "minimize"], "crowded")
    axis = figure.axes[0]
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert "Pareto front, baselines" in legend and "Pareto front, sampled" in legend
    squares = [c for c in axis.collections if c.get_label() == "Pareto front, baselines"][0]
    assert len(squares.get_offsets()) == sum(1 for p in points if p.on_front and p.baseline)
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in axis.texts]
    assert boxes and all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    frame = axis.get_window_extent(renderer)
    assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 for box in boxes)  # inside the panel
    assert axis.get_title() == "1 trial far behind the front beyond these axes"  # framed on the front


def test_labels_that_find_no_room_are_shortened_then_left_out():
    figure = pareto_figure(_crowded(2), ["a", "b"], ["minimize", "minimize"], "")
    axis = figure.axes[0]
    same = [(10.0, 20.0, "a long label that needs a lot of room", "t001")] * 12  # twelve labels on one point
    placed = place_labels(axis, same, 7)
    assert 0 < len(placed) < 12 and {a.get_text() for a in placed} <= {same[0][2], "t001"}


def test_the_per_layer_plot_gives_every_trial_its_own_colour_and_keeps_equal_lines_visible():
    layers = {trial: {"prune.ratio": [0.5, 0.5, 0.5]} for trial in range(18)}  # eighteen identical lines
    figure = layers_figure(layers, "same", {trial: f"t{trial:03d}" for trial in layers})
    lines = figure.axes[0].lines
    assert len({tuple(line.get_color()) for line in lines}) == 18 == len(trial_colors(18))
    assert len({tuple(line.get_xdata()) for line in lines}) == 18  # shifted apart, none hidden under another
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [f"t{trial:03d}" for trial in range(18)]
