"""Shared fixtures: the embedded model, a study context on it, and overrides for fast studies."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoprune.calibration import collect_stats
from autoprune.context import StudyContext
from autoprune.data import TextSource, calibration_windows, evaluation_windows, read_text, tokenize
from autoprune.model import decoder_layout, embedded_model_path, load_model
from autoprune.registry import build_registry

TINY = embedded_model_path("tiny-opt")


def study_overrides(tmp_path: Path, name: str = "test", trials: int = 3) -> list[str]:
    """Hydra overrides for a real but small study whose records all live under tmp_path."""
    return [
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"study.storage=sqlite:///{tmp_path}/optuna.db",
        f"calibration.cache_dir={tmp_path}/stats",
        f"study.name={name}",
        f"search.n_trials={trials}",
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
