"""Calibration statistics on disk, keyed by what they depend on, so a study on the same model
and data runs no calibration forward pass at all.

The key is a SHA-256 of the format version, the model's weights, the calibration token windows
(which fix their count and length) and the statistic kinds; any change to one of them is a
different entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from autoprune.calibration import LinearStats

# Bumped whenever what a stored statistic means changes, so older entries are never read back.
# 2: sequence counts and per-window centring follow the calibration batches, whatever the rank
# of a linear's input (1 counted one sequence per batch for OPT's fc1/fc2).
FORMAT = "autoprune-stats-2"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autoprune" / "stats"


def stats_key(model: nn.Module, windows: Tensor, kinds: set[str]) -> str:
    digest = hashlib.sha256(FORMAT.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(windows.cpu().contiguous().numpy().tobytes())
    digest.update(repr(tuple(windows.shape)).encode())
    digest.update(",".join(sorted(kinds)).encode())
    return digest.hexdigest()


class StatsStore:
    """A directory of statistics files, one per key."""

    def __init__(self, directory: Path):
        self.directory = directory

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def load(self, key: str) -> dict[str, LinearStats] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return {name: LinearStats(**fields) for name, fields in saved.items()}

    def save(self, key: str, stats: dict[str, LinearStats]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        partial = path.with_suffix(f".{os.getpid()}.partial")  # processes of one study may save the same entry
        torch.save({name: vars(s) for name, s in stats.items()}, partial)
        partial.replace(path)  # a killed run never leaves a truncated entry behind
        return path
