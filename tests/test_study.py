"""Whole studies on the embedded model: real Optuna storage, a real MLflow store, resumption."""

import json
import logging

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from autoprune import hookimpl
from autoprune.components import Scorer
from autoprune.config import compose_config
from autoprune.errors import AutopruneError, ConfigError
from autoprune.registry import build_registry
from autoprune.study import run_study
from autoprune.tracking import StudyTracker
from conftest import study_overrides


def runs_of(tmp_path, study):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("autoprune")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`autoprune.study` = '{study}'")
    parents = [r for r in runs if r.data.tags["autoprune.role"] == "study"]
    children = sorted(
        (r for r in runs if r.data.tags["autoprune.role"] == "trial"), key=lambda r: int(r.data.tags["autoprune.trial"])
    )
    return client, parents, children


def registry_with(scorer):
    """The installed plugins plus one extra scorer, registered as a plugin would register it."""

    class ScorerPlugin:
        @hookimpl
        def register_scorers(self):
            return [scorer]

    return build_registry(extra_plugins=(ScorerPlugin(),))


def optuna_trials(tmp_path, study):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One default-shaped study (TPE, magnitude/wanda, searched offsets) that starts with four
    baselines (uniform and OWL for each metric at 0.6), shared by the MLflow checks."""
    tmp_path = tmp_path_factory.mktemp("study")
    overrides = [*study_overrides(tmp_path, name="main", trials=6), "baselines.sparsities=[0.6]"]
    result = run_study(compose_config(overrides))
    return tmp_path, result


BASELINES = ["uniform magnitude 0.6", "uniform wanda 0.6", "owl magnitude 0.6", "owl wanda 0.6"]


def test_study_completes_the_requested_trials(finished):
    tmp_path, result = finished
    trials = optuna_trials(tmp_path, "main")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert result.ran == 6 and len(result.rows) == 6
    assert len(result.seconds["calibration"]) == 1  # statistics collected once for all trials
    assert len(result.seconds["compress"]) == 6


def test_mlflow_has_one_parent_and_a_child_per_trial(finished):
    tmp_path, result = finished
    client, parents, children = runs_of(tmp_path, "main")
    assert len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["autoprune.version"]
    assert len(children) == 6
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["autoprune.state"] == "COMPLETE" and child.info.status == "FINISHED"
        assert child.data.params["prune.metric"] in ("magnitude", "wanda")
        assert 0.2 <= float(child.data.params["prune.sparsity"]) <= 0.8
        assert child.data.params["prune.granularity"] == "block"
        assert {"perplexity", "size_mb", "prune.achieved_sparsity", "prune.ratio.0"} <= set(child.data.metrics)
        assert "prune_layers.json" in {a.path for a in client.list_artifacts(child.info.run_id)}
    sampled = [child for child in children if "autoprune.baseline" not in child.data.tags]
    assert len(sampled) == 2
    assert all({f"prune.offsets.{i}" for i in range(6)} <= set(child.data.params) for child in sampled)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "config.yaml",
        "search_space.json",
        "pareto.json",
        "pareto.png",
        "pareto.html",
        "pareto_layers.png",
    } <= artifacts


def test_baselines_run_first_are_marked_and_use_their_allocations(finished, tiny_context):
    tmp_path, result = finished
    client, _, children = runs_of(tmp_path, "main")
    assert [child.data.tags.get("autoprune.baseline") for child in children[:4]] == BASELINES
    for child in children[:4]:
        allocation = child.data.params["prune.allocation"]
        assert allocation == child.data.tags["autoprune.baseline"].split()[0]
        assert not any(key.startswith("prune.offsets") for key in child.data.params)  # not sampled for baselines
        table = json.loads(
            open(client.download_artifacts(child.info.run_id, "prune_layers.json", str(tmp_path))).read()
        )
        assert table["columns"] == ["unit", "ratio"]
        ratios = [row[1] for row in table["data"]]
        units = tiny_context.layout.units("block")
        expected = tiny_context.registry.allocation(allocation).ratios(0.6, units, tiny_context, {})
        assert ratios == pytest.approx(expected, abs=1e-9)
    assert [row["baseline"] for row in result.rows] == [*BASELINES, "-", "-"]


def test_pareto_set_is_tagged_and_tabled(finished):
    tmp_path, result = finished
    client, parents, children = runs_of(tmp_path, "main")
    tagged = {int(c.data.tags["autoprune.trial"]) for c in children if c.data.tags["autoprune.is_pareto"] == "true"}
    assert tagged == set(result.front) and tagged
    points = {
        int(c.data.tags["autoprune.trial"]): (c.data.metrics["perplexity"], c.data.metrics["size_mb"]) for c in children
    }
    for number in tagged:  # nothing dominates a front member
        p = points[number]
        assert not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points.values())
    for number in set(points) - tagged:  # something dominates every other trial
        p = points[number]
        assert any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points.values())
    table = json.loads(open(client.download_artifacts(parents[0].info.run_id, "pareto.json", str(tmp_path))).read())
    assert sorted(row[0] for row in table["data"]) == sorted(tagged)
    assert {"trial", "run_id", "perplexity", "size_mb", "prune/metric"} <= set(table["columns"])


def test_a_second_study_on_the_same_model_and_data_reads_statistics_from_disk(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autoprune")
    run_study(compose_config(study_overrides(tmp_path, name="first", trials=1)))
    assert "in 2 calibration forward passes" in caplog.text  # 16 windows, 8 per pass
    assert len(list((tmp_path / "stats").glob("*.pt"))) == 1
    caplog.clear()
    run_study(compose_config(study_overrides(tmp_path, name="second", trials=1)))
    assert "0 calibration forward passes" in caplog.text and "in 2 calibration forward passes" not in caplog.text
    caplog.clear()
    run_study(compose_config([*study_overrides(tmp_path, name="third", trials=1), "data.calib_windows=24"]))
    assert "in 3 calibration forward passes" in caplog.text  # other windows: a new entry
    assert len(list((tmp_path / "stats").glob("*.pt"))) == 2


def test_a_sequential_study_collects_statistics_in_every_trial(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autoprune")
    result = run_study(
        compose_config([*study_overrides(tmp_path, name="seq", trials=2), "calibration.mode=sequential"])
    )
    assert len(result.rows) == 2 and "calibration: sequential" in caplog.text
    assert not (tmp_path / "stats").exists()  # nothing collected up front, nothing cached


def test_statistics_from_disk_equal_fresh_ones(tiny_context, tmp_path):
    from autoprune.stats_store import StatsStore, stats_key

    store = StatsStore(tmp_path)
    key = stats_key(tiny_context.model, tiny_context.calibration, {"sum_sq", "xtx"})
    store.save(key, tiny_context.stats)
    loaded = store.load(key)
    for name, fresh in tiny_context.stats.items():
        for field in ("sum", "sum_sq", "xtx"):
            assert torch.equal(getattr(loaded[name], field), getattr(fresh, field))
        assert (loaded[name].count, loaded[name].samples) == (fresh.count, fresh.samples)
    assert key != stats_key(tiny_context.model, tiny_context.calibration, {"sum_sq"})


def test_rerun_with_same_name_resumes_and_extends(tmp_path):
    first = run_study(compose_config(study_overrides(tmp_path, name="resume", trials=2)))
    assert first.ran == 2
    again = run_study(compose_config(study_overrides(tmp_path, name="resume", trials=2)))
    assert again.ran == 0  # complete: nothing to run
    extended = run_study(compose_config(study_overrides(tmp_path, name="resume", trials=4)))
    assert extended.ran == 2
    trials = optuna_trials(tmp_path, "resume")
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state == TrialState.COMPLETE for t in trials)
    _, parents, children = runs_of(tmp_path, "resume")
    assert len(parents) == 1 and parents[0].info.run_id == first.parent_run_id == extended.parent_run_id
    assert [int(c.data.tags["autoprune.trial"]) for c in children] == [0, 1, 2, 3]


def test_a_killed_study_resumes(tmp_path):
    first = run_study(compose_config(study_overrides(tmp_path, name="killed", trials=1)))
    # what `kill -9` in the middle of trial 1 leaves: a RUNNING Optuna trial and a RUNNING child run
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{tmp_path}/optuna.db")
    tracker = StudyTracker(f"sqlite:///{tmp_path}/mlflow.db", "autoprune", "killed")
    tracker.parent_id = first.parent_run_id
    stale = study.ask()
    stale.set_user_attr("mlflow_run_id", tracker.start_trial(stale.number, "t001 wanda", {"prune.metric": "wanda"}))

    result = run_study(compose_config(study_overrides(tmp_path, name="killed", trials=3)))
    states = [t.state for t in optuna_trials(tmp_path, "killed")]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert result.ran == 2 and len(result.rows) == 3
    _, parents, children = runs_of(tmp_path, "killed")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    killed = children[1]
    assert killed.info.status == "KILLED" and killed.data.tags["autoprune.state"] == "FAIL"
    assert "autoprune.is_pareto" not in killed.data.tags  # a failed trial is not a candidate for the front


class InterruptsSecondTrial(Scorer):
    """Acts like Ctrl-C arriving during the second trial."""

    name = "interrupting"
    objectives = {"calls": "minimize"}

    def __init__(self):
        self.calls = [0]  # shared by the copies each study binds, so the count spans both runs

    def score(self, context):
        self.calls[0] += 1
        if self.calls[0] == 2:
            raise KeyboardInterrupt
        return {"calls": float(self.calls[0])}


def test_ctrl_c_records_the_trial_as_killed_and_the_study_resumes(tmp_path):
    registry = registry_with(InterruptsSecondTrial())
    overrides = [*study_overrides(tmp_path, name="ctrlc", trials=3), "scorers=[interrupting]"]
    with pytest.raises(AutopruneError, match="interrupted; resume with study.name=ctrlc"):
        run_study(compose_config(overrides), registry)
    _, parents, children = runs_of(tmp_path, "ctrlc")
    assert parents[0].info.status == "KILLED"
    assert [c.info.status for c in children] == ["FINISHED", "KILLED"]
    result = run_study(compose_config(overrides), registry)  # the scorer's third call onwards succeeds
    assert len(result.rows) == 3
    assert [t.state for t in optuna_trials(tmp_path, "ctrlc")].count(TrialState.FAIL) == 1


def test_resume_after_the_mlflow_runs_were_deleted(tmp_path):
    first = run_study(compose_config(study_overrides(tmp_path, name="deleted", trials=2)))
    client, parents, children = runs_of(tmp_path, "deleted")
    for run in [*parents, *children]:
        client.delete_run(run.info.run_id)
    result = run_study(compose_config(study_overrides(tmp_path, name="deleted", trials=3)))
    assert result.parent_run_id == first.parent_run_id
    assert client.get_run(first.parent_run_id).info.lifecycle_stage == "active"
    assert len(result.rows) == 3


def test_resume_with_other_objectives_is_refused(tmp_path):
    run_study(compose_config(study_overrides(tmp_path, name="objectives", trials=1)))
    with pytest.raises(ConfigError, match="was run with objectives .*perplexity.*size_mb.*this run asks for"):
        run_study(compose_config([*study_overrides(tmp_path, name="objectives", trials=2), "scorers=[perplexity]"]))


@pytest.mark.parametrize("sampler", ["nsga2", "nsga3", "qmc", "random", "tpe"])
def test_every_sampler_runs_a_study(tmp_path, sampler):
    config = compose_config([f"+search={sampler}", *study_overrides(tmp_path, name=sampler, trials=3)])
    assert config.search.sampler == sampler
    result = run_study(config)
    assert len(result.rows) == 3
    _, parents, _ = runs_of(tmp_path, sampler)
    assert parents[0].data.tags["autoprune.sampler"] == sampler


class BreaksWhenSparse(Scorer):
    """A scorer that breaks on models more than half pruned: failed trials must not stop a study."""

    name = "fragile"
    objectives = {"fragile": "minimize"}

    def score(self, context):
        weights = [linear.weight for linear in context.layout.all_linears().values()]
        sparsity = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        if sparsity > 0.5:
            raise RuntimeError(f"fragile scorer broke at sparsity {sparsity:.2f}")
        return {"fragile": sparsity}


def test_failed_trials_are_recorded_and_the_study_goes_on(tmp_path):
    registry = registry_with(BreaksWhenSparse())
    config = compose_config(
        [
            *study_overrides(tmp_path, name="fragile", trials=3),
            "scorers=[perplexity,fragile]",
            "+search=random",
            "search.max_failures=20",
            "baselines.allocations=[]",  # only sampled sparsities: some above 0.5, some below
        ]
    )
    result = run_study(config, registry)
    trials = optuna_trials(tmp_path, "fragile")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and len(completed) == 3 == len(result.rows)
    assert all(t.params["prune.sparsity"] > 0.49 for t in failed)
    assert all(t.params["prune.sparsity"] < 0.51 for t in completed)
    _, _, children = runs_of(tmp_path, "fragile")
    failed_runs = [c for c in children if c.data.tags["autoprune.state"] == "FAIL"]
    assert len(failed_runs) == len(failed)
    assert all(
        r.info.status == "FAILED" and "fragile scorer broke" in r.data.tags["autoprune.error"] for r in failed_runs
    )


def test_a_study_that_only_fails_stops_with_an_error(tmp_path):
    registry = registry_with(BreaksWhenSparse())
    overrides = [
        *study_overrides(tmp_path, name="doomed", trials=2),
        "scorers=[fragile]",
        "space.prune.sparsity.low=0.6",
    ]
    with pytest.raises(AutopruneError, match="stopped after 2 failed trials"):
        run_study(compose_config(overrides), registry)
    _, parents, children = runs_of(tmp_path, "doomed")
    assert parents[0].info.status == "FAILED" and [c.data.tags["autoprune.state"] for c in children] == ["FAIL", "FAIL"]


@pytest.mark.parametrize("space", ["optishear", "layers"])
def test_the_shipped_layerwise_spaces_run(tmp_path, space):
    overrides = [*study_overrides(tmp_path, name=space, trials=3, space=space), "baselines.sparsities=[0.5]"]
    result = run_study(compose_config(overrides))
    assert len(result.rows) == 3
    _, _, children = runs_of(tmp_path, space)
    baselines = [c for c in children if "autoprune.baseline" in c.data.tags]
    assert [c.data.tags["autoprune.baseline"] for c in baselines] == ["uniform wanda 0.5", "owl wanda 0.5"]
    assert all(not any(k.startswith("remove_layers") for k in c.data.params) for c in baselines)  # prune alone
    sampled = next(c for c in children if "autoprune.baseline" not in c.data.tags)
    if space == "optishear":
        assert {f"prune.steps.{i}" for i in range(6)} <= set(sampled.data.params)
    else:
        removed = sum(sampled.data.metrics[f"remove_layers.removed.{i}"] for i in range(6))
        assert removed == int(sampled.data.params["remove_layers.count"])
        assert sum(1 for key in sampled.data.metrics if key.startswith("prune.ratio.")) == 6 - removed


def test_baseline_statistics_are_collected_only_while_baselines_wait(tmp_path):
    import shutil

    extra = ["calibration.mode=sequential", "baselines.allocations=[owl]", "baselines.sparsities=[0.5]"]
    run_study(compose_config([*study_overrides(tmp_path, name="seqowl", trials=2), *extra]))
    assert (tmp_path / "stats").exists()  # OWL scores the dense model: its statistics come up front
    shutil.rmtree(tmp_path / "stats")
    result = run_study(compose_config([*study_overrides(tmp_path, name="seqowl", trials=3), *extra]))
    assert len(result.rows) == 3 and result.ran == 1
    assert not (tmp_path / "stats").exists()  # both baselines are done: nothing to collect up front


class AlwaysBreaks(Scorer):
    """A scorer that fails every trial, with an error far longer than an MLflow tag holds."""

    name = "always_breaks"
    objectives = {"never": "minimize"}
    detail = "".join(f"block {i}: checksum mismatch\n" for i in range(500))

    def score(self, context):
        raise RuntimeError(f"{self.detail}the disk is full")


def test_a_failed_baseline_is_queued_again_a_bounded_number_of_times(tmp_path):
    from autoprune.search import BASELINE_ATTEMPTS, BASELINE_ATTR

    overrides = [
        *study_overrides(tmp_path, name="requeue", trials=2),
        "scorers=[always_breaks]",
        "space.prune.metric.choices=[wanda]",
        "baselines.allocations=[uniform]",
        "baselines.sparsities=[0.5]",
        "search.max_failures=5",
    ]
    with pytest.raises(AutopruneError, match="stopped after 5 failed trials"):
        run_study(compose_config(overrides), registry_with(AlwaysBreaks()))
    trials = optuna_trials(tmp_path, "requeue")
    attempts = [(t.user_attrs.get(BASELINE_ATTR) or {}).get("attempt") for t in trials]
    assert attempts == [*range(1, BASELINE_ATTEMPTS + 1), None, None]  # then the sampler's own trials
    assert all(t.state == TrialState.FAIL for t in trials)
    client, _, children = runs_of(tmp_path, "requeue")
    error = children[0].data.tags["autoprune.error"]
    assert error.endswith("block 499: checksum mismatch\nthe disk is full") and len(error) <= 4000  # its end
    assert "Traceback" not in error  # the exception itself, what the run page shows
    full = client.download_artifacts(children[0].info.run_id, "error.txt", str(tmp_path))
    text = open(full).read()
    assert text.startswith("Traceback") and AlwaysBreaks.detail in text and len(text) > 4000


@pytest.mark.parametrize("sampler", ["nsga3", "tpe"])
def test_the_joint_space_searches_pruning_and_kv_bits_together(tmp_path, sampler):
    """`autoprune space=joint +search=...`: a uniform-KV baseline first, then trials that sample
    block removal, pruning and per-layer key/value bits at once, scored on perplexity, size and the
    KV cache."""
    name = f"joint-{sampler}"
    overrides = [
        *study_overrides(tmp_path, name=name, trials=3, space="joint"),
        "scorers=[perplexity,size,kv_cache]",
        f"+search={sampler}",
        "baselines.allocations=[]",
        "baselines.kv_bits=[2]",
        "space.kv_cache.quantize=true",  # the bits are sampled in every trial
    ]
    result = run_study(compose_config(overrides))
    assert [row["trial"] for row in result.rows] == [0, 1, 2]
    client, _, children = runs_of(tmp_path, name)
    baseline, sampled = children[0], children[1]
    assert baseline.data.tags["autoprune.baseline"] == "uniform KV 2-bit"
    assert not any(key.startswith("prune.") for key in baseline.data.params)  # the kv_cache compressor alone
    dense_kv = 2 * 6 * 128 * 256 * 4 / 1e6  # float32 keys and values of 6 blocks, 128 tokens
    assert sampled.data.metrics["kv_cache_mb"] <= dense_kv
    assert baseline.data.metrics["kv_cache_mb"] < dense_kv / 8  # 2 bits + scales against 32 bits
    assert {f"kv_cache.key_bits.{i}" for i in range(6)} | {f"kv_cache.value_bits.{i}" for i in range(6)} <= set(
        sampled.data.params
    )
    assert "prune.sparsity" in sampled.data.params and "size_mb" in sampled.data.metrics
    table = json.loads(
        open(client.download_artifacts(sampled.info.run_id, "kv_cache_layers.json", str(tmp_path))).read()
    )
    assert table["columns"] == ["block", "key_bits", "value_bits"]
    removed = int(sampled.data.params["remove_layers.count"])  # the joint space may drop blocks first
    assert len(table["data"]) == 6 - removed
    for block, key_bits, _ in table["data"]:  # blocks keep their dense names, and their sampled bits
        assert key_bits == int(sampled.data.params[f"kv_cache.key_bits.{block.rsplit('.', 1)[1]}"])
