"""The recipe: everything that produced an exported checkpoint, written beside it as `recipe.yaml`.

    format: 1
    study: tiny-20260101-120000        # the study and trial the checkpoint reproduces
    trial: 7
    baseline: null                     # or {name, overrides} of a baseline trial
    objectives: {perplexity: 41.2, size_mb: 9.1}    # the trial's values, as Optuna recorded them
    perplexity: {trial: 41.2, exported: 40.7}       # the exported checkpoint's, same evaluation windows
    sample:                            # the trial's parameters per compressor, in the order they ran
      remove_layers: {count: 1, compensate: true}
      prune: {metric: wanda, sparsity: 0.52, granularity: block, allocation: searched, offsets: [...]}
      kv_cache: {key_bits: [...], value_bits: [...], group_size: 32, residual: 0}
    reported:                          # what the compressors reported: prune.unit and prune.ratio
      prune.ratio: [...]               #  (the per-layer ratios), remove_layers.removed, kv bits, ...
    blocks: {dense: 6, removed: [2]}   # removed decoder blocks, in the dense model's numbering
    runtime:                           # state beyond the weights, in the checkpoint's block numbering:
      kv_cache: {key_bits: [...], value_bits: [...], group_size: 32, residual: 0}  # load_compressed applies it
    calibration: {mode: sequential, windows: 16, tokens: 128, batch_size: 8, data_hash: sha256:...}
    evaluation: {windows: 8, tokens: 128, data_hash: sha256:...}
    versions: {autoprune: 0.1.0, python: 3.11.7, torch: 2.13.0, transformers: 5.23.0, optuna: 5.0.0}
    config: {...}                      # the study's resolved config, with the calibration export used

Per-layer lists in `sample` and `reported` use the dense model's numbering, as the study did;
`runtime` is what `autoprune.api.load_compressed` re-applies to the checkpoint. `config` and
`sample` (with `baseline`) are enough to rebuild the model from the dense checkpoint
(`autoprune.api.reproduce`); the data hashes say whether the same windows were used.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from autoprune.errors import ConfigError

FORMAT = 1
FILE_NAME = "recipe.yaml"


@dataclass
class Recipe:
    study: str
    trial: int
    baseline: dict[str, Any] | None
    objectives: dict[str, float]
    perplexity: dict[str, float]
    sample: dict[str, dict[str, Any]]
    reported: dict[str, Any]
    blocks: dict[str, Any]
    runtime: dict[str, dict[str, Any]]
    calibration: dict[str, Any]
    evaluation: dict[str, Any]
    versions: dict[str, str]
    config: dict[str, Any]

    def to_yaml(self) -> str:
        plain = json.loads(json.dumps({"format": FORMAT, **asdict(self)}))  # tuples and numbers as YAML's own
        return yaml.safe_dump(plain, sort_keys=False, width=120)


def windows_hash(windows: Tensor) -> str:
    """A digest of token windows (their shape and ids), to tell whether two runs saw the same data."""
    digest = hashlib.sha256(str(tuple(windows.shape)).encode())
    digest.update(windows.cpu().long().contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def library_versions() -> dict[str, str]:
    import optuna
    import torch
    import transformers

    from autoprune import __version__

    return {
        "autoprune": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "optuna": optuna.__version__,
    }


def read_recipe(location: str | Path) -> Recipe:
    """The recipe in `location`: an exported directory or its recipe.yaml."""
    path = Path(location)
    path = path / FILE_NAME if path.is_dir() else path
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(
            f"{path} cannot be read as a recipe ({error}); pass a directory autoprune export wrote"
        ) from None
    names = [field.name for field in fields(Recipe)]
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not an autoprune recipe (it holds no mapping)")
    wrong = [name for name in names if name not in data] + (["format"] if data.get("format") != FORMAT else [])
    if wrong:
        raise ConfigError(f"{path} is not an autoprune recipe of format {FORMAT} (missing or different: {wrong})")
    return Recipe(**{name: data[name] for name in names})
