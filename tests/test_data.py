"""Calibration and evaluation windows follow the field's conventions, deterministically."""

import random

import pytest
import torch

from autoprune.corpus import corpus_text
from autoprune.data import (
    TextSource,
    calibration_set,
    calibration_windows,
    check_source,
    document_windows,
    evaluation_windows,
    read_text,
)
from autoprune.errors import ConfigError
from autoprune.validation import check_fields


def test_calibration_windows_are_seeded_random_slices():
    ids = torch.arange(1000)
    first = calibration_windows(ids, 16, 8, seed=0)
    assert first.shape == (8, 16)
    assert torch.equal(first, calibration_windows(ids, 16, 8, seed=0))
    assert not torch.equal(first, calibration_windows(ids, 16, 8, seed=1))
    assert all(torch.equal(row, torch.arange(row[0], row[0] + 16)) for row in first)  # contiguous


def test_evaluation_windows_are_consecutive_and_non_overlapping():
    windows = evaluation_windows(torch.arange(100), 16, None)
    assert windows.shape == (6, 16) and torch.equal(windows.reshape(-1), torch.arange(96))
    assert evaluation_windows(torch.arange(100), 16, 2).shape == (2, 16)


def test_too_little_text_is_a_clear_error():
    with pytest.raises(ConfigError, match="fewer than one window of 16"):
        evaluation_windows(torch.arange(10), 16, None)


def test_local_files_are_a_text_source(tmp_path):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b.txt").write_text("second")
    source = TextSource(source="files", paths=(str(tmp_path / "a.txt"), str(tmp_path / "b.txt")))
    check_source(source, "evaluation")
    assert read_text(source) == "first\n\nsecond"
    with pytest.raises(ConfigError, match="is not a file"):
        check_source(TextSource(source="files", paths=(str(tmp_path / "missing.txt"),)), "evaluation")


def reference_c4_windows(documents, tokenizer, seqlen, nsamples, seed):
    """The calibration loop of the Wanda and SparseGPT codebases (get_c4), written out as the spec."""
    random.seed(seed)
    windows = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(documents) - 1)
            ids = tokenizer(documents[i])["input_ids"]
            if len(ids) > seqlen:
                break
        i = random.randint(0, len(ids) - seqlen - 1)
        windows.append(ids[i : i + seqlen])
    return torch.tensor(windows)


def test_document_sampling_draws_the_references_windows(tiny):
    _, tokenizer = tiny
    text = corpus_text("calib", max_chars=400 * 40)  # read once: a shorter read is a prefix of it
    documents = [text[: 400 * (k + 1)][-37 * (k + 3) :] for k in range(40)]
    ours = document_windows(documents, tokenizer, context=32, count=12, seed=0)
    assert torch.equal(ours, reference_c4_windows(documents, tokenizer, 32, 12, seed=0))
    assert not torch.equal(ours, document_windows(documents, tokenizer, context=32, count=12, seed=1))


def test_documents_too_short_for_a_window_are_never_chosen(tiny):
    _, tokenizer = tiny
    documents = ["short", "tiny", corpus_text("calib", max_chars=3000)]
    windows = document_windows(documents, tokenizer, context=64, count=5, seed=0)
    long_ids = tokenizer(documents[2])["input_ids"]
    for window in windows.tolist():
        assert any(long_ids[i : i + 64] == window for i in range(len(long_ids) - 63))
    with pytest.raises(ConfigError, match="no calibration document is longer than 64 tokens"):
        document_windows(["short", "tiny"], tokenizer, context=64, count=1, seed=0)


def test_files_as_documents_through_the_config(tmp_path, tiny):
    _, tokenizer = tiny
    for k in range(3):
        (tmp_path / f"{k}.txt").write_text(corpus_text("calib", max_chars=2000 * (k + 1)))
    source = TextSource(source="files", paths=tuple(str(tmp_path / f"{k}.txt") for k in range(3)), sampling="documents")
    check_source(source, "calibration")
    assert calibration_set(source, tokenizer, context=32, count=4, seed=0).shape == (4, 32)
    with pytest.raises(ConfigError, match="unknown data.calibration.sampling 'rows'"):
        check_fields(TextSource(sampling="rows"), key="data.calibration")
