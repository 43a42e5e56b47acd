"""A third-party plugin package, pip-installed for real, is found and used by name."""

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from conftest import study_overrides

EXAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "example"


def test_pip_installed_plugin_adds_a_metric_and_a_scorer(tmp_path, tiny):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(EXAMPLE)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

    listed = subprocess.run([sys.executable, "-m", "autoprune", "plugins"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(
        line.split()[0] == "relative_magnitude" and line.endswith("from autoprune-example")
        for line in lines
        if line.strip()
    )
    assert any(
        line.split()[0] == "nonzeros" and line.endswith("from autoprune-example") for line in lines if line.strip()
    )

    study = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoprune",
            *study_overrides(tmp_path, name="thirdparty", trials=2),
            "space.prune.metric.choices=[relative_magnitude]",
            "scorers=[perplexity,size,nonzeros]",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert study.returncode == 0, study.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("autoprune").experiment_id], filter_string="tags.`autoprune.role` = 'trial'"
    )
    assert len(runs) == 2
    model = tiny[0]
    dense_nonzeros = sum(int(p.count_nonzero()) for p in model.parameters())
    prunable = sum(
        m.weight.numel() for m in model.modules() if m.__class__.__name__ == "Linear" and m is not model.lm_head
    )
    for run in runs:
        assert run.data.params["prune.metric"] == "relative_magnitude"
        pruned = run.data.metrics["prune.achieved_sparsity"] * prunable
        assert abs(run.data.metrics["nonzero_params_m"] * 1e6 - (dense_nonzeros - pruned)) < 1000
