"""The `autoprune` command as a user types it: subprocesses, exit codes, one-line errors. (The
many bad inputs run the same `main` in process, `cli_harness.run_cli`, a subprocess's imports
costing seconds each; one of them runs as a subprocess too, so the entry point's exit code and
stderr are checked for real.)"""

import os
import shutil
import subprocess
import sys
import time

import pytest
from cli_harness import run_cli

from conftest import TINY, study_overrides


def autoprune(*args, cwd=None, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def test_plugins_lists_every_kind_with_its_distribution():
    result = autoprune("plugins")
    assert result.returncode == 0
    for kind in ("metrics:", "allocations:", "compressors:", "scorers:"):
        assert kind in result.stdout
    wanda = next(line for line in result.stdout.splitlines() if line.strip().startswith("wanda"))
    assert "autoprune_plugins.metrics.wanda" in wanda and wanda.endswith("from autoprune")


def test_plugins_with_autoload_off_lists_none():
    result = autoprune("plugins", env={**os.environ, "AUTOPRUNE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0
    assert "auto-loading is off" in result.stdout and "wanda" not in result.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["space.prune.metric.choices=[wanda,sparsegpt9]"],
            "unknown metric 'sparsegpt9'; known metrics: ace, ace_cos, ace_var, magnitude, meta, ria, sparsegpt, stade, wanda",
        ),
        (
            ["scorers=[perplexity,latency9]"],
            "unknown scorer 'latency9'; known scorers: kv_cache, latency, lm_eval, memory, perplexity, size",
        ),
        (["search.sampler=cmaes"], "unknown sampler 'cmaes'; known samplers: nsga2, nsga3, qmc, random, tpe"),
        (["+search=cmaes"], "Could not find 'search/cmaes'; available options: nsga2, nsga3, qmc, random, tpe"),
        (["space.prune.sparsity.high=1.0"], "space.prune.sparsity takes values in [0, 1) (at most 0.99), got 1.0"),
        (["space.prune.sparsity=-0.1"], "space.prune.sparsity takes values in [0, 1) (at most 0.99), got -0.1"),
        (["space.prune.offsets=0.1"], "space.prune.offsets must be a per-layer distribution"),
        (["data.evaluation.split=test"], "data.evaluation.split is 'test'; the stdlib corpus has train, calib, eval"),
        (["search.max_failures=0"], "search.max_failures is 0; use a whole number from 1 to 100000"),
        (["search.seed=abc"], "search.seed is 'abc'; use a whole number"),
        (["spärsity=1"], "cannot parse the override 'spärsity=1': unexpected 'ä' at character 3"),
        (["space.prune.pattern=2:4"], "add it with +space.prune.pattern=2:4"),
        (["+space.prune.patern=2:4"], "unknown key space.prune.patern; did you mean space.prune.pattern?"),
        (["calibration.mode=lazy"], "unknown calibration.mode 'lazy'; choose one of dense-once, sequential"),
        (["model.path=/no/such/model"], "model.path '/no/such/model' is not a directory; set model.path=<local dir>"),
        (["model=gpt9"], "Could not find 'model/gpt9'; available options: opt-1.3b, tiny"),
        (["modle.path=x"], "unknown config key 'modle'"),
        (
            ["space.prune.allocation=owll"],
            "unknown allocation 'owll'; known allocations: mrp, optishear, owl, searched",
        ),
        (["baselines.allocations=[uniform,owl2]"], "baselines.allocations: unknown allocation 'owl2'"),
        (["space.prune.granularity=row"], "space.prune.granularity must be one of block, linear, got 'row'"),
        (
            ["space.prune.allocation=owl", "+space.prune.owl_lambda=-1"],
            "space.prune.owl_lambda must be a positive number",
        ),
        (["space=layers", "space.remove_layers.count=1.5"], "space.remove_layers.count takes whole numbers"),
    ],
)
def test_bad_input_stops_before_compute_with_one_line(tmp_path, overrides, message):
    space = next((o.removeprefix("space=") for o in overrides if o.startswith("space=")), "prune")
    rest = [o for o in overrides if not o.startswith("space=")]
    outcome = run_cli([*study_overrides(tmp_path, fresh_mlflow=True, space=space), *rest], tmp_path)
    assert outcome.code == 2  # not None: the model was never loaded
    [line] = outcome.stderr.strip().splitlines()
    assert line.startswith("autoprune: error: ") and message in line
    assert list(tmp_path.iterdir()) == []  # nothing was written: no stores, no statistics, no outputs/


def test_the_command_itself_exits_2_with_one_line_on_stderr_and_writes_nothing(tmp_path):
    result = autoprune(*study_overrides(tmp_path, fresh_mlflow=True), "search.sampler=cmaes", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "autoprune: error: unknown sampler 'cmaes'; known samplers: nsga2, nsga3, qmc, random, tpe"
    ]
    assert "model tiny" not in result.stdout  # nothing was loaded
    assert list(tmp_path.iterdir()) == []


def test_hub_model_without_network_fails_fast_naming_model_path(tmp_path):
    # an empty cache and a hub address where nothing listens: the same on machines with a network
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    started = time.perf_counter()
    result = autoprune(
        "+search=nsga3", "model=opt-1.3b", *study_overrides(tmp_path, fresh_mlflow=True), cwd=tmp_path, env=env
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "facebook/opt-1.3b" in line and "model.path=<local dir>" in line
    assert elapsed < 45  # seconds, not the hub client's minute of retries
    assert list(tmp_path.iterdir()) == []  # told before any store (or cache) was written


def test_opt_model_config_with_a_local_checkpoint_runs(tmp_path):
    local = tmp_path / "opt-copy"
    shutil.copytree(TINY, local)
    result = autoprune(
        "+search=nsga3", "model=opt-1.3b", f"model.path={local}", *study_overrides(tmp_path, trials=2), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "model opt-1.3b" in result.stdout
    assert "Pareto front" in result.stdout
    assert "[2/2]" in result.stdout


def test_cfg_prints_the_composed_config():
    result = autoprune("--cfg", "+search=nsga3", "search.n_trials=60")
    assert result.returncode == 0
    assert "sampler: nsga3" in result.stdout and "n_trials: 60" in result.stdout


def test_help_names_the_commands():
    result = autoprune("--help")
    assert result.returncode == 0 and "autoprune plugins" in result.stdout and "autoprune export" in result.stdout
