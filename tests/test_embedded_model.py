"""The embedded default model: a real, small, self-trained checkpoint that plain transformers loads."""

import math
from collections import Counter
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from autoprune.corpus import corpus_text
from autoprune.data import evaluation_windows, tokenize
from autoprune_plugins.scorers.perplexity import perplexity
from conftest import TINY


def test_checkpoint_is_a_small_normal_hf_checkpoint():
    files = {p.name for p in Path(TINY).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert sum(p.stat().st_size for p in Path(TINY).iterdir()) < 20 * 2**20
    model = AutoModelForCausalLM.from_pretrained(TINY)
    assert model.config.model_type == "opt"
    assert AutoTokenizer.from_pretrained(TINY)("def f(): pass")["input_ids"]


def unigram_perplexity(train_ids, test_ids, vocab_size):
    counts = Counter(train_ids.tolist())
    total = len(train_ids) + vocab_size
    return math.exp(-sum(math.log((counts[t] + 1) / total) for t in test_ids.tolist()) / len(test_ids))


def test_model_beats_a_unigram_model_threefold_on_held_out_text(tiny):
    model, tokenizer = tiny
    test_ids = tokenize(tokenizer, corpus_text("eval"))
    windows = evaluation_windows(test_ids, model.config.max_position_embeddings, None)
    model_ppl = perplexity(model, windows)
    unigram_ppl = unigram_perplexity(tokenize(tokenizer, corpus_text("train")), windows.reshape(-1), len(tokenizer))
    assert model_ppl <= unigram_ppl / 3
