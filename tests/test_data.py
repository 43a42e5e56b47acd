"""Calibration and evaluation windows follow the field's conventions, deterministically."""

import pytest
import torch

from autoprune.data import TextSource, calibration_windows, check_source, evaluation_windows, read_text
from autoprune.errors import ConfigError


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
