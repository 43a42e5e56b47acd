"""The plain Python API prunes and evaluates exactly as a trial does."""

import pytest
import torch

from autoprune import api
from autoprune.corpus import corpus_text
from autoprune.data import tokenize
from autoprune.trial import run_trial
from conftest import TINY


def test_api_matches_a_trial_with_the_same_windows(tiny_context):
    registry = tiny_context.registry
    trial = run_trial(
        tiny_context,
        [registry.compressor("prune")],
        [registry.scorer("perplexity")],
        {"prune": {"metric": "wanda", "sparsity": 0.6, "pattern": "unstructured"}},
    )
    model, tokenizer = api.load(TINY)
    dense = api.perplexity(model, tiny_context.evaluation)
    info = api.prune(model, tiny_context.calibration, metric="wanda", sparsity=0.6, mode="dense-once")
    assert info["achieved_sparsity"] == pytest.approx(trial.info["prune.achieved_sparsity"])
    assert api.perplexity(model, tiny_context.evaluation) == pytest.approx(trial.values["perplexity"], rel=1e-6)
    assert dense < trial.values["perplexity"]


def test_api_from_text_with_a_pattern():
    model, tokenizer = api.load(TINY)
    calibration = api.windows(tokenizer, corpus_text("calib", max_chars=100_000), context=128, count=8)
    assert calibration.shape == (8, 128)
    info = api.prune(model, calibration, metric="sparsegpt", pattern="2:4")
    assert info["achieved_sparsity"] == pytest.approx(0.5)
    first = next(iter(model.model.decoder.layers[0].parameters()))  # a weight of the first block
    assert ((first != 0).reshape(first.shape[0], -1, 4).sum(2) == 2).all()
    ids = tokenize(tokenizer, corpus_text("eval", max_chars=20_000))
    assert ids.dim() == 1 and api.perplexity(model, ids) > 1.0
    assert torch.isfinite(torch.tensor(api.perplexity(model, ids)))
