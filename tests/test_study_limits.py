"""Constraints and multi-fidelity in real studies: what reaches Optuna, MLflow and the front."""

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from autoprune.config import compose_config
from autoprune.fidelity import STAGES_ATTR
from autoprune.study import run_study
from conftest import study_overrides

WANDA_UNIFORM = ["space.prune.metric.choices=[wanda]", "baselines.allocations=[uniform]"]


def trials_and_runs(tmp_path, name):
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("autoprune").experiment_id
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`autoprune.study` = '{name}' and tags.`autoprune.role` = 'trial'"
    )
    return trials, {int(run.data.tags["autoprune.trial"]): run for run in runs}


def test_an_infeasible_trial_is_recorded_tagged_and_kept_off_the_front(tmp_path):
    """Uniform Wanda at 30 % has the lower perplexity and so would be on the front; a size bound it
    breaks keeps it off, tagged infeasible, while 70 % is within it."""
    overrides = [
        *study_overrides(tmp_path, name="bounded", trials=2),
        *WANDA_UNIFORM,
        "baselines.sparsities=[0.3,0.7]",
        "constraints=['size_mb<=15']",
    ]
    result = run_study(compose_config(overrides))
    trials, runs = trials_and_runs(tmp_path, "bounded")
    by_sparsity = {run.data.params["prune.sparsity"]: number for number, run in runs.items()}
    light, heavy = by_sparsity["0.3"], by_sparsity["0.7"]
    assert result.front == [heavy]
    assert (
        runs[light].data.tags["autoprune.feasible"] == "false" and runs[heavy].data.tags["autoprune.feasible"] == "true"
    )
    assert "autoprune.is_pareto" not in runs[light].data.tags or runs[light].data.tags["autoprune.is_pareto"] == "false"
    assert trials[light].constraints == {"size_mb<=15": runs[light].data.metrics["size_mb"] - 15}
    assert trials[heavy].constraints == {"size_mb<=15": 0.0}
    assert all(t.state == TrialState.COMPLETE for t in trials)  # infeasible is not failed: it still teaches


def test_trials_dominated_at_the_cheap_stage_are_stopped_there_and_recorded_as_pruned(tmp_path):
    """Three completed baselines at 30-50 % and a space up to 95 %: a sampled trial sparser than
    all three is worse at the KL stage than each of them, so it stops there (as the first sampled
    trial of this seed does), and the run goes on until it has its completed trials."""
    overrides = [
        *study_overrides(tmp_path, name="staged", trials=4),
        *WANDA_UNIFORM,
        "scorers=[perplexity]",
        "baselines.sparsities=[0.3,0.4,0.5]",
        "space.prune.sparsity={low:0.3,high:0.95}",
        "search.fidelity=true",
    ]
    result = run_study(compose_config(overrides))
    trials, runs = trials_and_runs(tmp_path, "staged")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and len(complete) == 4 and len(result.rows) == 4
    for trial in pruned:
        assert list(trial.user_attrs[STAGES_ATTR]) == ["perplexity/kl"]
        run = runs[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["autoprune.state"] == "PRUNED"
        assert run.data.metrics["stage.perplexity/kl.perplexity"] > max(
            t.user_attrs[STAGES_ATTR]["perplexity/kl"]["perplexity"] for t in complete[:3]
        )
        assert trial.number not in result.front
    assert set(complete[0].user_attrs[STAGES_ATTR]) >= {"perplexity/kl"}  # completed trials keep their stages
