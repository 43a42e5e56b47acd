"""What a Ray worker process does with a trial, in this process (no Ray): it builds the study's
context from the config once, runs each sample on it, and sends an error or an early stop back
instead of raising."""

from __future__ import annotations

from omegaconf import OmegaConf

from autoprune.backends import ray_worker
from autoprune.backends.ray_worker import WorkerJob, decode, encode, run_sample
from autoprune.config import compose_config
from autoprune.fidelity import Gate, Measured
from conftest import study_overrides

SAMPLE = {"prune": {"allocation": "uniform", "granularity": "block", "metric": "wanda", "sparsity": 0.5}}


def job(tmp_path) -> WorkerJob:
    small = ["data.calib_windows=4", "data.eval_windows=4", "++data.calibration.max_chars=100000"]
    config = compose_config([*study_overrides(tmp_path, name="worker"), *small, "++data.evaluation.max_chars=20000"])
    return WorkerJob(OmegaConf.to_yaml(config), baselines=(), threads=1, cwd=str(tmp_path))


def test_a_worker_builds_its_context_once_and_sends_errors_and_early_stops_back(tmp_path):
    ray_worker._built.clear()
    work = job(tmp_path)
    first, second = run_sample(work, SAMPLE), run_sample(work, {"prune": {**SAMPLE["prune"], "sparsity": 0.7}})
    assert first.error is None and first.built_s is not None  # the first trial of the process built it
    assert second.error is None and second.built_s is None  # the second reused it
    assert second.result.values["size_mb"] < first.result.values["size_mb"]
    assert first.result.seconds.keys() == {"compress", "score", "restore"}

    failed = decode(encode(run_sample(work, {"prune": {**SAMPLE["prune"], "metric": "no_such_metric"}})))
    assert failed.result is None
    assert "no_such_metric" in str(failed.error)
    assert failed.traceback.startswith("Traceback (most recent call last)")
    ahead = Measured({"perplexity": 1.0, "size_mb": 1.0}, {"perplexity/kl": {"perplexity": 0.0}})
    gate = Gate({"perplexity": "minimize", "size_mb": "minimize"}, [ahead] * 3)  # three trials better everywhere
    stopped = decode(encode(run_sample(work, SAMPLE, gate)))
    assert stopped.result is None and stopped.error is None
    assert stopped.stopped[:2] == ("perplexity/kl", 3)  # stopped at the cheapest stage, for the driver to prune

    again = run_sample(work, SAMPLE)  # the failure restored the dense model: the same trial, the same values
    assert again.result.values == first.result.values
