"""Shared fixtures: the embedded model, a study context on it, and overrides for fast studies."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autoprune.calibration import collect_stats
from autoprune.context import StudyContext
from autoprune.data import TextSource, calibration_windows, evaluation_windows, read_text, tokenize
from autoprune.model import decoder_layout, embedded_model_path, load_model
from autoprune.registry import build_registry

TINY = embedded_model_path("tiny-opt")


@functools.cache
def _migrated_mlflow_store() -> Path:
    """An empty MLflow SQLite store with its schema created, once per test session: creating the
    schema takes about 10 s on this machine, and a study would pay it for every fresh store."""
    path = Path(tempfile.mkdtemp(prefix="autoprune-mlflow-")) / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def study_overrides(
    tmp_path: Path, name: str = "test", trials: int = 3, fresh_mlflow: bool = False, space: str = "prune"
) -> list[str]:
    """Hydra overrides for a real but small study whose records all live under tmp_path: the prune
    space (or `space`) with perplexity and size as objectives, the cheapest to measure; the tests of
    the default study and of each scorer choose theirs.

    The MLflow store starts as a copy of an empty, already-migrated one (`fresh_mlflow`: no file at
    all, for tests that check nothing is written)."""
    if not fresh_mlflow and not (tmp_path / "mlflow.db").exists():
        shutil.copyfile(_migrated_mlflow_store(), tmp_path / "mlflow.db")
    return [
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"study.storage=sqlite:///{tmp_path}/optuna.db",
        f"calibration.cache_dir={tmp_path}/stats",
        f"study.name={name}",
        f"search.n_trials={trials}",
        f"space={space}",
        "scorers=[perplexity,size]",
        "data.calib_windows=16",
        "data.eval_windows=8",
    ]


@pytest.fixture(scope="session")
def tiny():
    """The embedded model and tokenizer, loaded once; tests that change it must restore it."""
    return load_model(TINY, None, "float32")


@pytest.fixture(scope="session")
def tiny_context(tiny) -> StudyContext:
    model, tokenizer = tiny
    layout = decoder_layout(model)
    context_length = model.config.max_position_embeddings
    calibration = calibration_windows(
        tokenize(tokenizer, read_text(TextSource(split="calib", max_chars=200_000))), context_length, 16, 0
    )
    evaluation = evaluation_windows(
        tokenize(tokenizer, read_text(TextSource(split="eval", max_chars=100_000))), context_length, 8
    )
    stats = collect_stats(model, layout, calibration, {"sum_sq", "xtx"})
    return StudyContext(model, tokenizer, layout, calibration, evaluation, stats, build_registry())
